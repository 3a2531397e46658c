"""`vanilla-transformer push EXPORT_DIR REPO_ID`: upload an exported model folder to the Hugging Face Hub."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from huggingface_hub.errors import HfHubHTTPError

from ..deployment.hub import PushError, push_folder
from .parsing import CommandParser


def parser() -> argparse.ArgumentParser:
    result = CommandParser(
        prog="vanilla-transformer push",
        description="Upload an exported model folder (weights, configs, tokenizer, model card, code files) to the "
                    "Hugging Face Hub. Needs a token: `hf auth login`, HF_TOKEN, or --token.")
    result.add_argument("export_dir", help="a model folder, e.g. <output_dir>/final")
    result.add_argument("repo_id", help="the Hub repo, 'user/name' (created if missing); a bare name goes to your "
                                        "user")
    result.add_argument("--private", action="store_true", help="create the repo private (an existing repo keeps "
                                                               "its visibility)")
    result.add_argument("--revision", default=None, help="branch to push to (created from main if new; default "
                                                         "main)")
    result.add_argument("--token", default=None, help="Hugging Face token (default: HF_TOKEN or the stored login)")
    result.add_argument("--commit_message", default=None, help="message of the upload commit")
    return result


def main(argv: list[str]) -> int:
    """`vanilla-transformer push EXPORT_DIR REPO_ID [--private] [--revision REV] [--token TOKEN]`."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    from .main import one_line

    arguments = parser()
    args = arguments.parse_args(argv)
    try:
        validate_repo_id(args.repo_id)
    except HFValidationError as error:
        arguments.error(f"invalid REPO_ID: {error}")
    if not Path(args.export_dir).is_dir():
        arguments.error(f"EXPORT_DIR {args.export_dir} is not a directory")
    try:
        commit = push_folder(args.export_dir, args.repo_id, private=args.private, revision=args.revision,
                             token=args.token, commit_message=args.commit_message)
    except PushError as error:
        print(f"vanilla-transformer push: error: {error}", file=sys.stderr)
        return 1
    except HfHubHTTPError as error:
        print(f"vanilla-transformer push: error: the Hub refused the push: {one_line(error)}", file=sys.stderr)
        return 1
    repo_id = commit.repo_url.repo_id
    revision = f", revision={args.revision!r}" if args.revision else ""
    print(f"pushed {args.export_dir} to {commit.repo_url} (revision {args.revision or 'main'}, commit {commit.oid})")
    print(f'load it with AutoModelForSeq2SeqLM.from_pretrained("{repo_id}"{revision}) after '
          "`import vanilla_transformer.modeling`, or with trust_remote_code=True")
    return 0
