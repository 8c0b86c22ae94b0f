"""The Django app holding what the bot received."""
