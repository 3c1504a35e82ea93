"""Old names that keep working for one release, with a warning that names the new one.

The warnings are :class:`FutureWarning`, which Python shows by default wherever the old name
is used: a :class:`DeprecationWarning` is shown only for code run as ``__main__``, so a
user's own module, or a script that calls a helper of theirs, would never see it. The
book's page *Changes* (``book/changelog.md``) lists every rename.
"""

from __future__ import annotations

import functools
import warnings

#: The release without the names deprecated in 0.2.0.
REMOVED_IN = "0.3.0"


def warn_renamed(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that ``old`` is now spelled ``new`` (``stacklevel`` as :func:`warnings.warn`'s,
    counted from the caller of this function)."""
    warnings.warn(
        f"{old} is deprecated and will be removed in fslearn {REMOVED_IN}; use {new}",
        FutureWarning,
        stacklevel=stacklevel,
    )


def renamed_keywords(where: str, **renames):
    """Decorate a function so that it still takes the keyword arguments ``renames`` maps to
    their new names, with a warning; its signature shows the new names alone.

    ``where`` names the function in the warning (e.g. ``"FineTune"``). A rename is the new
    name, or ``(new name, convert)`` where the old argument's value needs converting
    (``whole=True`` → ``test_adapt="whole"``; ``convert`` of ``None``, an old default, means
    not given). Giving an old name and its new name together is a ``TypeError``, as Python's
    for a repeated argument.
    """

    def decorate(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            for old, rename in renames.items():
                if old not in kwargs:
                    continue
                new, convert = rename if isinstance(rename, tuple) else (rename, None)
                if new in kwargs:
                    raise TypeError(
                        f"{where}() got both {old}= and {new}=; {old} is the old name of "
                        f"{new}: pass {new}= alone"
                    )
                value = kwargs.pop(old)
                if convert is None:
                    warn_renamed(f"{where}({old}=…)", f"{where}({new}=…)")
                    kwargs[new] = value
                elif (converted := convert(value)) is not None:
                    warn_renamed(f"{where}({old}={value!r})", f"{where}({new}={converted!r})")
                    kwargs[new] = converted
            return function(*args, **kwargs)

        return wrapper

    return decorate
