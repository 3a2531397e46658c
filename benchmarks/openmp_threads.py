"""Why `generate` runs slower in a non-main thread (issue #31): time beam search of a tiny-preset-shaped model
(random weights, 16 sentences of 30 tokens, beam 4, 30 new tokens) in the main thread and in a worker thread, with
and without another thread having run a parallel (OpenMP) op first.

    python benchmarks/openmp_threads.py            # prints a Markdown table; each case in a fresh process

Each case runs in a process of its own, since what matters is which threads have run OpenMP regions before.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time

CASES = {
    "main": "decode in the main thread",
    "thread": "decode in a worker thread; no other thread ran a parallel op",
    "thread_after_main_op": "decode in a worker thread after the main thread ran one parallel op (as loading a model "
                            "there does: the server's in-process engine)",
    "thread_after_helper_op": "decode in a worker thread after another, finished, thread ran one parallel op",
}


def decode_times(repeats: int) -> list[float]:
    import torch

    from vanilla_transformer.configuration import VanillaTransformerConfig
    from vanilla_transformer.modeling import VanillaTransformerForConditionalGeneration

    torch.manual_seed(0)
    config = VanillaTransformerConfig(vocab_size=8000, d_model=256, encoder_layers=3, decoder_layers=3,
                                      encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=512,
                                      decoder_ffn_dim=512, dropout=0.0, max_position_embeddings=256)
    model = VanillaTransformerForConditionalGeneration(config).eval()
    ids = torch.randint(4, 8000, (16, 30))

    def run():
        with torch.no_grad():
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), num_beams=4, max_new_tokens=30,
                           min_new_tokens=30)

    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def case(name: str, threads: int, repeats: int) -> None:
    """One case, in this process; prints the median seconds."""
    import torch

    torch.set_num_threads(threads)
    parallel_op = lambda: torch.randn(512, 512) @ torch.randn(512, 512)  # noqa: E731
    result = []
    if name == "main":
        result = decode_times(repeats)
    else:
        if name == "thread_after_main_op":
            parallel_op()
        elif name == "thread_after_helper_op":
            helper = threading.Thread(target=parallel_op)
            helper.start()
            helper.join()
        worker = threading.Thread(target=lambda: result.extend(decode_times(repeats)))
        worker.start()
        worker.join()
    print(statistics.median(result))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2, the CI machine's cores)")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        case(args.case, args.threads, args.repeats)
        return 0
    from bench import cpu_model

    print(f"CPU: {cpu_model()}; torch threads {args.threads}; OMP_WAIT_POLICY "
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}; median of {args.repeats} beam-4 decodes\n")
    print("| case | seconds | × main |\n|---|---:|---:|")
    seconds = {}
    for name, what in CASES.items():
        out = subprocess.run([sys.executable, __file__, "--case", name, "--threads", str(args.threads), "--repeats",
                              str(args.repeats)], capture_output=True, text=True, check=True).stdout
        seconds[name] = float(out.split()[-1])
        print(f"| {what} | {seconds[name]:.3f} | {seconds[name] / seconds['main']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    raise SystemExit(main())
