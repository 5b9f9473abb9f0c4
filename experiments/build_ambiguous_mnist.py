"""Builds the shipped Ambiguous-MNIST file from MNIST (resumable; prints progress).

    DDU_TF_DATA_DIR=<dir holding mnist/> .venv/bin/python experiments/build_ambiguous_mnist.py

runs `ddu_tf.generation.ambiguous_mnist.generate` with the default config and writes
``ddu_tf/io/data/ambiguous_mnist_generated.npz`` (read by `ddu_tf.io.ambiguous_mnist`). The work
directory (default ``~/.cache/ddu_tf/ambiguous_mnist/<config digest>``) keeps the trained models
and every finished chunk: after a kill, the same command continues from the last finished chunk.
``--config tiny`` is a seconds-scale smoke build (written into its work directory unless
``--output`` is given). Wall times go to ``--report`` (default ``<work dir>/report.json``), not
into the data file, which is byte-identical for the same config on the same machine.
"""
import argparse
import dataclasses
import json
import os
import pathlib
import time

from ddu_tf import cli
from ddu_tf.generation import ambiguous_mnist
from ddu_tf.io import ambiguous_mnist as amnist_io
from ddu_tf.io import mnist_idx


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", choices=sorted(ambiguous_mnist.CONFIGS), default="default")
    parser.add_argument("--tiny", action="store_true", help="same as --config tiny")
    parser.add_argument("--num-candidates", type=int, default=None,
                        help="override the config's candidate count (a multiple of its chunk size)")
    parser.add_argument("--seed", type=int, default=None, help="override the config's seed")
    parser.add_argument("--work-dir", default=None,
                        help="resumable state (default ~/.cache/ddu_tf/ambiguous_mnist/<digest>)")
    parser.add_argument("--output", default=None,
                        help="data file (default: the package file for the default config, else "
                             "<work dir>/ambiguous_mnist_generated.npz)")
    parser.add_argument("--report", default=None,
                        help="timings JSON (default <work dir>/report.json)")
    parser.add_argument("--data-dir", default=None, help="MNIST directory (else $DDU_TF_DATA_DIR)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    name = "tiny" if args.tiny else args.config
    overrides = {k: v for k, v in (("num_candidates", args.num_candidates), ("seed", args.seed))
                 if v is not None}
    config = dataclasses.replace(ambiguous_mnist.CONFIGS[name], **overrides)
    config.validate()  # a ValueError: cli.run prints it without a traceback
    # The command that rebuilds this content (paths and work dir do not change the bytes).
    command = " ".join(["python experiments/build_ambiguous_mnist.py", f"--config {name}"]
                       + [f"--{k.replace('_', '-')} {v}" for k, v in overrides.items()])
    work_dir = pathlib.Path(args.work_dir or ambiguous_mnist.default_work_dir(config))
    if args.output:
        output = pathlib.Path(args.output)
    elif name == "default" and not overrides:
        output = amnist_io.DEFAULT_PATH
    else:
        output = work_dir / "ambiguous_mnist_generated.npz"
    print(f"config {name} {overrides or ''}: {config.num_candidates:,} candidates in "
          f"{config.num_chunks} chunks; work dir {work_dir}; output {output}", flush=True)

    t0 = time.time()
    images, labels = mnist_idx.load_idx_arrays("mnist", "train", args.data_dir)
    result = ambiguous_mnist.generate(images, labels, config, verbose=True, work_dir=work_dir,
                                      command=command)
    sha = ambiguous_mnist.write(result, output)
    info = result.info
    report = {
        "command": command, "output": str(output), "sha256": sha,
        "bytes": os.path.getsize(output), "wall_seconds_this_run": time.time() - t0,
        "timings": result.timings, "counts": info["counts"],
        "pool_pe_tv_to_official": info["pool_pe_histogram"]["total_variation"],
        "test_pe_tv_to_official": info["test_pe_histogram"]["total_variation"],
        "max_mutual_information": info["max_mutual_information"],
        "mean_label_entropy": info["label_entropy"]["mean"],
        "fraction_identical_labels": info["fraction_identical_labels"]["all"],
    }
    report_path = pathlib.Path(args.report) if args.report else work_dir / "report.json"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1), flush=True)
    print(f"wrote {output} ({report['bytes'] / 1e6:.2f} MB, sha256 {sha}); report {report_path}")


if __name__ == "__main__":
    cli.run(main)
