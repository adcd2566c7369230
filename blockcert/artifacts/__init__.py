"""The files of a run and how they are read and written: strict readers (:mod:`.safeio`), digests
(:mod:`.digest`), crash-safe writes (:mod:`.fsutil`) and the records of the JSON artifacts. No torch."""
