"""Tests of the storage package (local directory and a real moto S3 server)."""
