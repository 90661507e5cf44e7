"""Sharing a run on the Hugging Face Hub: `vaediff push RUN REPO_ID` uploads the run directory (its model card
README.md included) with huggingface_hub, leaving out the resume state (optimizer and EMA: a checkpoint to
continue training, not part of the model) and half-written files. The token is huggingface_hub's own
(HF_TOKEN or `hf auth login`): vaediff never reads, writes or logs it. Offline, or without a token, one line
says what stopped it and that the run directory itself is what to copy.
"""

from __future__ import annotations

import re
from pathlib import Path

from vaediff.errors import ConfigError, RunError
from vaediff.families import load_run
from vaediff.model_card import CARD_FILE
from vaediff.training import CHECKPOINT_FILE

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
LEFT_OUT = [CHECKPOINT_FILE, ".*.tmp", "**/.*.tmp"]


def push_run(run_dir: str | Path, repo_id: str, private: bool = False) -> str:
    """Upload the run in `run_dir` to the model repository `repo_id` (made if missing); returns its URL."""
    if not REPO_ID.match(repo_id):
        raise ConfigError(f"REPO_ID must be NAMESPACE/NAME (your user or organisation, then the model's name), "
                          f"got {repo_id!r}")
    run = load_run(run_dir)  # a run, whole, before anything is sent
    if not (run.run_dir / CARD_FILE).is_file():
        raise RunError(f"{run_dir} has no model card ({CARD_FILE}; runs trained before cards existed): "
                       f"`vaediff evaluate {run_dir}` writes one with its metrics")
    from huggingface_hub import HfApi  # the network client: imported when pushing
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, OfflineModeIsEnabled

    api = HfApi()
    unreachable = f"the Hugging Face Hub cannot be reached from here; {run_dir} itself is the model: copy the directory"
    try:
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(run.run_dir), repo_type="model",
                          ignore_patterns=LEFT_OUT, commit_message=f"Upload {run.model_type} run with vaediff")
    except OfflineModeIsEnabled:
        raise RunError(f"{unreachable} (HF_HUB_OFFLINE is set)") from None
    except LocalTokenNotFoundError:
        raise RunError("no Hugging Face token: set HF_TOKEN or run `hf auth login`, then push again") from None
    except HfHubHTTPError as exc:
        status = getattr(exc.response, "status_code", None)
        if status in (401, 403):
            raise RunError(f"the Hub refused the token for {repo_id} (HTTP {status}): check HF_TOKEN or "
                           f"`hf auth login`, and that you may write to {repo_id.split('/')[0]}") from None
        raise RunError(f"the Hub answered HTTP {status} for {repo_id}: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # no network (DNS, refused, timed out): the HTTP client's transport errors
        if not _network_error(exc):
            raise
        raise RunError(f"{unreachable} ({type(exc).__name__})") from None
    return str(url)


def _network_error(exc: Exception) -> bool:
    """A failure to reach the server, whichever HTTP client huggingface_hub uses (httpx, requests)."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    return isinstance(exc, OSError) or bool(names & {"TransportError", "ConnectionError", "Timeout"})
