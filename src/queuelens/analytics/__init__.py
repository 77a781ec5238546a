"""Pure analytics over recorded queue, job and worker metrics."""
