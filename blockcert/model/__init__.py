"""The native model: where a model spec's files are (:mod:`.paths`, no torch), loading it (:mod:`.load`),
streaming it block by block (:mod:`.stream`), observing what its attention did (:mod:`.observe`), checking
IRs against it (:mod:`.equivalence`), and synthetic checkpoints for scale tests (:mod:`.synthetic`).

Importing this package imports nothing; each module is imported where it is used."""
