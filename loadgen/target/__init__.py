"""What to send: prompts of planned lengths, request bodies per server family, and the pre-run probe that
calibrates text prompts on the endpoint (vegeta's Targeter: one object answers "what is the next request")."""
