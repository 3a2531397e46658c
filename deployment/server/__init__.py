"""`vanilla-transformer serve`: a model behind HTTP, with dynamic batching.

* `engine.open_engine`: the one place the server gets a translation engine (our model through `generate`, or a
  CTranslate2 export), wrapped so that every sentence of a batch keeps its own §6.1 length limit.
* `batching.Batcher`: concurrent requests queued and decoded together in one worker thread.
* `app.create_app`: the Starlette application (LibreTranslate-compatible `/translate`, the native `/v1/translate`,
  `/health`, `/metrics`, `/openapi.json`, the web page at `/`).
* `command`: the `serve` command's parser and `main(argv)`.
"""
