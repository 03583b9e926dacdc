"""Training a zoo model on an image folder, Zeiler & Fergus's way, with resumable checkpoints.

ZFNet has no public weights; :func:`train` makes them. The defaults are the paper's recipe
(Section 3):

- SGD, momentum 0.9, mini-batches of 128, learning rate 1e-2, lowered tenfold when the
  validation top-1 error stops improving (``ReduceLROnPlateau``; the training loss without a
  validation set), no weight decay (the paper states none);
- dropout 0.5 in fc6 and fc7; ZFNet's weights drawn from N(0, 1e-2), biases 0 (other zoo
  models keep their own initialisation unless ``init="normal"``);
- resize to 256, random 224 crops and horizontal flips (torchvision transforms v2);
- filter renormalisation: after every step, each convolutional filter whose RMS exceeds
  ``clip_rms`` (0.1) is scaled back to that RMS (``clip_rms=0`` turns it off, as the paper's
  Fig. 6(a) needs).

What a run writes in its folder ``RUN/``:

- ``epoch_K.pt`` at the epochs in ``save_at`` (the paper's Fig. 4 epochs) and the last one
  (every epoch with ``keep_all``): checkpoints that ``load_model(name, weights=path)`` and
  every command's ``--weights`` read, with the class names and preprocessing;
- ``metrics.csv``: per epoch, the learning rate, loss and top-1/top-5 error for training and
  validation, seconds and images/s;
- ``last.pt``: the full training state (model, optimiser, scheduler, position in the epoch,
  running sums), written every ``checkpoint_every`` steps, at each epoch's end and on Ctrl-C.
  ``resume=True`` continues from it.

Reproducibility: the data order is seeded per epoch, each image's augmentation per (seed,
epoch, image) and the dropout masks per (seed, epoch, step, rank), so a resumed run ends with
the same weights as an uninterrupted one on the same machine and thread count, whatever the
number of DataLoader workers.

Distributed: under ``torchrun`` each process trains on its share of every global batch
(``batch_size`` is the global batch, split evenly) with ``DistributedDataParallel`` (NCCL on
GPU, gloo on CPU). On CUDA, mixed precision (bfloat16 autocast) and channels-last are on by
default, and JPEGs are decoded and augmented on the GPU, a batch at a time, with the same
seeded draws (:mod:`.gpu_reading`).
"""
from ..data.runs import read_metrics, run_checkpoints
from .loop import train
from .recipe import TrainingInterrupted, TrainResult, renormalise_filters

__all__ = ["train", "TrainResult", "TrainingInterrupted", "renormalise_filters", "read_metrics",
           "run_checkpoints"]
