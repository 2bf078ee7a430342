"""What a valid request must also satisfy against the model this service serves.

The schema (`service.schemas`) checks a request on its own; some options can only be
judged against the served model. Those are checked here, at submit (the API answers 422,
`tta solve` exits 2), so that a job that could never run is refused rather than queued to
fail. The worker keeps its own check as the last line of defence: PEFT refuses unknown
targets, and the job then ends `failed` with that reason.
"""

from __future__ import annotations

from service.errors import InvalidRequest
from service.schemas import SolveRequest
from service.weights import block_count, linear_layer_names


def check_against_model(req: SolveRequest, model: str) -> None:
    """Raise `InvalidRequest` naming the field and the valid values when `req` asks for
    something `model` does not have. Unknowable checks (a model whose layers cannot be read
    without loading it) pass here and are left to the worker."""
    if req.strategy != "sdpo":
        return  # only sdpo builds an adapter
    layers, blocks = req.sdpo.lora.layers, block_count(model)
    if layers is not None and blocks is not None and layers > blocks:
        raise InvalidRequest(
            f"sdpo.lora.layers: {layers} is more than the model's {blocks} decoder blocks; "
            f"use 1..{blocks}, or null for all of them",
            details={"field": "sdpo.lora.layers", "value": layers, "max": blocks},
        )
    valid = linear_layer_names(model)
    if valid is None:
        return
    unknown = [t for t in req.sdpo.lora.targets if t not in valid]
    if unknown:
        raise InvalidRequest(
            f"sdpo.lora.targets: {', '.join(unknown)} not in the model; it has the linear layers "
            f"{', '.join(sorted(valid))}",
            details={"field": "sdpo.lora.targets", "unknown": unknown, "valid": sorted(valid)},
        )
