"""``wa-middleware dead-letters MODULE:ATTR list|show|replay|purge``: printing only."""

from __future__ import annotations

import json
from typing import Any

from ..ops.deadletters import DeadLetters
from ._load import load_webhook

__all__ = ["run_command"]


def run_command(args: Any) -> int:
    """``wa-middleware dead-letters MODULE:ATTR list|show|replay|purge``."""
    letters = DeadLetters(load_webhook(args.app, args.path or ()))
    try:
        if args.action == "list":
            found = letters.list(args.limit)
            for letter in found:
                print(letter.summary())
            total = letters.count()
            print(f"{total} dead letter(s)" if len(found) == total else f"{len(found)} of {total} dead letter(s) shown")
            return 0
        if args.action == "show":
            if not args.ids:
                print("show needs a dead-letter id")
                return 2
            status = 0
            for letter_id in args.ids:
                found_letter = letters.get(letter_id)
                if found_letter is None:
                    print(f"{letter_id}: no such dead letter")
                    status = 1
                    continue
                letter = found_letter
                options = letter.message.get("options") or {}
                print(letter.summary())
                print(f"actor: {letter.message.get('actor_name')}  message id: {letter.message.get('message_id')}")
                print(f"tries: {int(options.get('wa_attempt', options.get('retries', 0))) + 1}")
                if options.get("wa_note"):
                    print(f"note: {options['wa_note']}")
                event = letter.event()
                if event is not None:
                    print(json.dumps(event, indent=1, default=str))
                if options.get("traceback"):
                    print(options["traceback"])
            return status
        ids = None if args.all else args.ids
        if ids is not None and not ids:
            print(f"{args.action} needs dead-letter ids, or --all")
            return 2
        if args.action == "replay":
            print(f"replayed {letters.replay(ids)} dead letter(s)")
        else:
            print(f"purged {letters.purge(ids)} dead letter(s)")
        return 0
    finally:
        letters.close()
