"""`python tests/support/train_then_die.py TRAIN_ARGS...`: `vanilla-transformer train`, except that with
KILL_AFTER_CHECKPOINT=N in the environment every process kills itself with SIGKILL (no cleanup at all) right after
checkpoint-N is complete — what a crash or a preempted node does, to check that `--resume` is exact. Usable as the
script of `accelerate launch` and `torchrun` too. `install()` does the patching, for scripts of their own."""

import logging
import os
import signal
import sys

KILL_AFTER_CHECKPOINT_ENV = "KILL_AFTER_CHECKPOINT"


def install() -> None:
    if not os.environ.get(KILL_AFTER_CHECKPOINT_ENV):
        return
    from vanilla_transformer.training.trainer import Trainer

    step, save = int(os.environ[KILL_AFTER_CHECKPOINT_ENV]), Trainer.save

    def save_then_die(self) -> None:
        save(self)
        if self.state.step == step:
            logging.getLogger(__name__).warning("%s=%d: killing this process with SIGKILL",
                                                KILL_AFTER_CHECKPOINT_ENV, step)
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)

    Trainer.save = save_then_die


if __name__ == "__main__":
    from vanilla_transformer.cli.main import run_command
    from vanilla_transformer.cli.train import main

    install()
    raise SystemExit(run_command("train", main, sys.argv[1:]))
