"""`vanilla-transformer serve`: a model behind HTTP, with dynamic batching.

* The engine comes from `deployment.engines.load_engine` (our model through `generate`, or a CTranslate2 export);
  `translation.plan` / `assemble` split texts into pieces and join their translations, each piece with its own §6.1
  length limit, so an answer never depends on its batch.
* `settings.Settings`: every limit and timeout, with its range (one `serve` flag each).
* `validation`: one `parse_*` per endpoint, from an HTTP request to a valid request or a 4xx naming the problem.
* `batching.Batcher`: concurrent requests' pieces queued and decoded together in worker threads.
* `workers`: engine replicas in worker processes (`--workers N`), each batch with a deadline; `engine_thread`: the
  in-process engine, loaded and run in one thread of its own (#31).
* `defaults`: `--engine auto` (CTranslate2 when the model converts, cached) and `--workers auto`, with their reasons.
* `connections`: uvicorn's h11 protocol with a deadline for a request's headers and a cap on open connections.
* `app.create_app`: the Starlette application (LibreTranslate-compatible `/translate`, the native `/v1/translate`,
  `/health`, `/metrics`, `/openapi.json`, the web page at `/`); `model_info`: the model card's name and scores.
* The command itself (its flags and `main`) is `cli/serve.py`.
"""
