"""``blockcert run`` and what follows it, in the order of the pipeline:

* :mod:`.promptsets`: the prompt set;
* :mod:`.trace`: the native model's trace of every prompt (residual stream, masks, head activity, losses);
* :mod:`.certify`: extract every block to IR, replay, measure, certify (``blockcert.run``), on an
  :mod:`.executors` executor, with loss coverage for many blocks in one pass (:mod:`.staircase`);
* :mod:`.stitch`: certified blocks stitched back in, the full-model certificate;
* :mod:`.experiments`: the paper's tables re-run.
"""
