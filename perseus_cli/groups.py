"""Command groups that name the verb a person probably meant.

`perseus stauts` should not only say there is no such verb: it should say
`status`. Click suggests close names only from the commands a group has
registered (and only in its newest versions), and the `perseus` group
registers none (its verbs are imported when they run), so the suggestion is
made here, from the names a group lists, for every version of click.
"""

from __future__ import annotations

import difflib

import click


class SuggestingGroup(click.Group):
    """A group whose "no such command" error names the closest commands."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = click.utils.make_str(args[0])
        if not ctx.resilient_parsing and not name.startswith("-"):
            if self.get_command(ctx, name) is None:
                close = difflib.get_close_matches(name, self.list_commands(ctx), n=3)
                if close:
                    names = " or ".join(repr(other) for other in close)
                    ctx.fail(f"No such command {name!r}. Did you mean {names}?")
        return super().resolve_command(ctx, args)
