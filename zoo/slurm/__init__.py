"""Running a zoo on SLURM: job arrays through submitit, requeue on preemption, status from squeue.

    jobs.py      what SLURM knows (squeue, MaxArraySize) and which array task holds which work
    submit.py    executors, grouping and array splitting, checkpointable tasks, waiting with progress
    launcher.py  `hydra/launcher=slurm`: a Hydra sweep submitted as job arrays
    landscape.py the landscape stage's items as job arrays

Work lives on disk, not in SLURM: a task that is requeued, killed or resubmitted finds its
finished models by their DONE files and resumes the others from last.ckpt.
"""
