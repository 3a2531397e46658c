"""Why `generate` runs slower in a non-main thread (issue #31): time beam search of a tiny-preset-shaped model
(random weights, 16 sentences of 30 tokens, beam 4, 30 new tokens) in the main thread and in a worker thread, with
and without another thread having run a parallel (OpenMP) op first; and count the process's voluntary context
switches per decode (`getrusage`: a thread that blocks instead of spinning, such as an OpenMP helper put to sleep
between parallel regions, makes one each time), which a busy machine does not blur as it blurs the seconds.

    python benchmarks/openmp_threads.py            # prints a Markdown table; each case in a fresh process
    OMP_WAIT_POLICY=ACTIVE python benchmarks/openmp_threads.py   # helpers always spin: the throttling test

Each case runs in a process of its own, since what matters is which threads have run OpenMP regions before. The
"worker thread; no other thread ran a parallel op" case builds the model in the thread that decodes: what the
server's engine thread does (deployment/server/engine_thread.py).
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
    "thread": "decode in a worker thread; no other thread ran a parallel op (it loads and decodes: the server's "
              "engine thread)",
    "thread_after_main_op": "decode in a worker thread after the main thread ran one parallel op (as loading a model "
                            "there does: the server's in-process engine)",
    "thread_after_helper_op": "decode in a worker thread after another, finished, thread ran one parallel op",
}


def decode_times(repeats: int) -> list[tuple[float, int]]:
    """(seconds, voluntary context switches of the whole process) of each decode."""
    import resource

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
        switches = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - switches))
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
    print(statistics.median(t for t, _ in result), statistics.median(n for _, n in result))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2, the CI machine's cores)")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        case(args.case, args.threads, args.repeats)
        return 0
    from machine import cpu_isa, cpu_name

    print(f"CPU: {cpu_name()} ({cpu_isa()}); torch threads {args.threads}; OMP_WAIT_POLICY "
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}; median of {args.repeats} beam-4 decodes\n")
    print("| case | seconds | × main | voluntary context switches per decode |\n|---|---:|---:|---:|")
    seconds = {}
    for name, what in CASES.items():
        out = subprocess.run([sys.executable, __file__, "--case", name, "--threads", str(args.threads), "--repeats",
                              str(args.repeats)], capture_output=True, text=True, check=True).stdout
        seconds[name], switches = map(float, out.split()[-2:])
        print(f"| {what} | {seconds[name]:.3f} | {seconds[name] / seconds['main']:.2f} | {switches:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    raise SystemExit(main())
