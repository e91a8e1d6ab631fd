"""`s2s serve`: the FastAPI application (``app``), the batcher that translates concurrent
requests together (``batcher``) and the page served at ``/`` (``page.html``)."""
