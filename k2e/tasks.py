"""Task and queue names shared by the API (which sends by name) and the worker."""

TRAIN_TASK = "k2e.train_job"
CPU_QUEUE = "cpu"
GPU_QUEUE = "gpu"


def queue_for(accelerator: str) -> str:
    """The queue a job with this accelerator is routed to."""
    return GPU_QUEUE if accelerator == "gpu" else CPU_QUEUE
