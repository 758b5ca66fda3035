"""Under SLURM, submitit owns the job's signals, not Lightning.

submitit (zoo/slurm/) requeues a task on SLURM's warning signal (USR2) before a time limit or a
preemption, and the requeued task resumes each model from its last.ckpt. Left alone, Lightning
would (1) requeue the job itself on SIGUSR1, saving a checkpoint we never read, and (2) turn the
SIGTERM that precedes a preemption's USR2 into an exit at the next batch, so the task would end
before submitit could requeue it.
"""

import signal
import threading

import lightning.pytorch as pl
from lightning.fabric.plugins.environments import SLURMEnvironment


class KeepSigterm(pl.Callback):
    """Hand SIGTERM back to the handler installed before fit (submitit's: log it and go on)."""

    def __init__(self) -> None:
        self.handler = signal.SIG_DFL

    def on_fit_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.handler = signal.getsignal(signal.SIGTERM)  # before Lightning installs its own

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        # Only the main thread may set handlers, and None means one installed outside Python.
        if self.handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.handler)  # Lightning restores its own list at teardown


def trainer_options() -> dict:
    """Extra `pl.Trainer` arguments inside a SLURM job: no Lightning requeue, SIGTERM left to submitit."""
    if not SLURMEnvironment.detect():
        return {"plugins": [], "callbacks": []}
    return {"plugins": [SLURMEnvironment(auto_requeue=False)], "callbacks": [KeepSigterm()]}
