"""Development tooling for recpipe: the local stack, demo, `recpipe` CLI, benchmarks, offline
evaluation, synthetic data and test fakes. Installed by the `dev` extra; imports `recpipe`,
never the reverse, and never ships in the Lambda layer or the SageMaker code tarball."""
