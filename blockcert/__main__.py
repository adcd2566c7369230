from blockcert.cli import main

main()
