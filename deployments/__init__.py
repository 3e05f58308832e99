"""Deployment files of sstar: the Prefect project file, the Kubernetes GPU job template and the GPU-limit script."""
