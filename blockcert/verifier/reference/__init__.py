"""The verifier's independent numpy reference (``verify --reference numpy``).

Nothing here imports torch, transformers or the producer's code (the pipeline, the metrics, the bounds,
the edits): it shares only the artifact formats with what it checks (the IR and its interpreter, the file
readers, the digests). ``tests/test_import_graph.py`` walks the imports to keep it that way.

* :mod:`.model`: a float64 forward of the supported architectures, read from the model's safetensors;
* :mod:`.full`: ``--level full`` with that forward (re-captured traces, suffix losses, stitched perplexity
  and probe, edit deviations);
* :mod:`.bounds`: a second, simpler implementation of the Lipschitz bounds (exact SVDs), against which the
  certified ones are checked.
"""
