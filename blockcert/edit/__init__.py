"""Certified edits (``blockcert edit``): :mod:`.certify` applies and measures an edit and writes its
certificate; :mod:`.refusal` is the contract the verifier shares (corpus, classifier, scores);
:mod:`.human` imports annotators' labels."""
