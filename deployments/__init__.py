"""Deployment files of sstar: how its flows run on a Prefect work pool of GPU machines.

Files:

* ``prefect.yaml`` — the Prefect project: the ``learn-catalog-nightly`` and ``learn-concept`` deployments.
* ``k8s-gpu-job-template.json`` — the Kubernetes base job template of the GPU work pool.
* :mod:`deployments.create_gpu_limit` — creates or updates the global concurrency limit GPU tasks hold.
* ``Dockerfile`` (with ``Dockerfile.dockerignore``) — the flow-run image: every installed package copied in.
* ``README.md`` — how to set it up.
"""
