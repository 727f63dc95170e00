"""What every Lambda handler shares, so that each `functions/<name>/app.py` reads like a table of
contents:

- `errors.ApiError`: the one error type of the HTTP API, with one body shape on every route;
- `api.api_resolver`: routing with CORS from settings, errors mapped to responses in one place;
- `identity.jwt_subject`: the JWT subject rule; `json_body`: the one request-body parser;
- `observability`: Logger (correlation id), Metrics (cold-start metric) and Tracer with
  `capture_response=False` (served lists and user ids never go to X-Ray), stacked by one
  decorator.

One way to initialise: a handler module builds its settings and dependencies at import. Lambda
runs imports in the init phase, which provisioned concurrency pays before traffic arrives and a
Kinesis poller pays once per environment; a misconfigured function fails there, with the
missing variable named, instead of on its first request.
"""
