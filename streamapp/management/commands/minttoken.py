"""``manage.py minttoken <username>``: print a bearer token for a non-browser client."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from streamapp.tokens import mint_token


class Command(BaseCommand):
    help = (
        "Print a token for 'Authorization: Bearer <token>' (or ?token=), checked by the default "
        "TOKEN_AUTHENTICATOR and valid for STREAMAPP['TOKEN_MAX_AGE'] seconds."
    )

    def add_arguments(self, parser) -> None:  # type: ignore[no-untyped-def]
        parser.add_argument("username")

    def handle(self, *args: object, username: str, **options: object) -> None:
        user_model = get_user_model()
        try:
            user = user_model._default_manager.get_by_natural_key(username)
        except user_model.DoesNotExist:
            raise CommandError(f"no user {username!r}") from None
        self.stdout.write(mint_token(user))
