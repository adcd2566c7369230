"""``blockcert report``: :mod:`.gather` collects a run's numbers; :mod:`.html`, :mod:`.markdown` and
:mod:`.svg` render them."""
