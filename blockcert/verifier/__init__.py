"""The third-party verifier (``blockcert verify``, ``blockcert.verify``): :mod:`.core` reads and checks every
certificate of a run; :mod:`.checks` is its vocabulary, :mod:`.metrics` re-derives a block's numbers,
:mod:`.bounds` checks the Lipschitz bounds against an independent implementation, :mod:`.edit` verifies edit
certificates, :mod:`.signatures` the DSSE envelopes beside them (``--trust``). The model at ``--level full``
comes from a reference: :mod:`.torch_reference` (the producer's code) or :mod:`.reference` (the independent
numpy one, which never imports torch or producer code)."""
