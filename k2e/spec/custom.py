"""The custom-object rules of a spec: every name the model leaves for ``custom_objects`` is
mapped, each mapping names a registry entry of the kind the model uses the name as, and
no output shares an input's name."""

from collections.abc import Iterable, Mapping

from k2e.custom_registry import USE_NAMES, misfits, registry
from k2e.errors import FieldError
from k2e.vetting.model_config import ModelSummary


def check_custom_objects(
    custom_objects: Mapping[str, str] | None,
    custom_names: Iterable[str],
    custom_uses: Mapping[str, list[str]],
    plugins: str = "",
) -> list[FieldError]:
    """Each mapping names a registry entry of the kind the model uses the name as (a layer
    class where the model builds a layer, an activation function where it activates, ...),
    and every name the model left for custom_objects is mapped."""
    errors = []
    known = registry(plugins)
    mapping = custom_objects or {}
    for name, target in mapping.items():
        entry = known.get(target)
        if entry is None:
            errors.append(
                FieldError(
                    ("custom_objects", name),
                    f"{target!r} is not in the server's custom-object registry "
                    f"(GET /custom-objects lists {sorted(known)})",
                )
            )
            continue
        wrong = misfits(entry.kind, custom_uses.get(name, []))
        if wrong:
            fits = sorted(n for n, e in known.items() if not misfits(e.kind, wrong))
            errors.append(
                FieldError(
                    ("custom_objects", name),
                    f"the model uses {name!r} as {_a(USE_NAMES[wrong[0]])}, but {target!r} is "
                    f"{_a(entry.kind)} in the server's custom-object registry: map it to an "
                    f"entry of that kind (GET /custom-objects: {fits or 'none'})",
                )
            )
    for name, uses in custom_uses.items():
        entry = known.get(name)
        if name not in mapping and entry is not None and misfits(entry.kind, uses):
            wrong = misfits(entry.kind, uses)
            errors.append(
                FieldError(
                    ("custom_objects",),
                    f"the model uses the registry name {name!r} as {_a(USE_NAMES[wrong[0]])}, "
                    f"but it is {_a(entry.kind)}: map {name!r} in custom_objects to an entry "
                    "of that kind",
                )
            )
    for name in custom_names:
        if name not in mapping:
            used = [USE_NAMES[u] for u in custom_uses.get(name, []) if u in USE_NAMES]
            what = " and ".join(used) if used else "class"
            errors.append(
                FieldError(
                    ("custom_objects",),
                    f"the model uses {what} {name!r}, which is neither a Keras built-in nor in "
                    "the server's custom-object registry: map it in custom_objects to a name "
                    f"GET /custom-objects lists ({sorted(known)})",
                )
            )
    return errors


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def check_shared_names(loc: tuple[str, ...], model: ModelSummary) -> list[FieldError]:
    """An output named like an input (a model that passes its input through): the library
    evaluates one on (features, labels) pairs, but k2e keys both by name."""
    shared = sorted({t.name for t in model.inputs} & {t.name for t in model.outputs})
    return [
        FieldError(
            loc,
            f"the model's output {name!r} has the name of its input {name!r} (it passes the "
            "input through): k2e keys features, labels and the export's tensors by name (a "
            "dataset holds one array per name), so they would collide; give the output a name "
            "of its own",
        )
        for name in shared
    ]
