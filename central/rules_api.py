"""`POST /api/v1/rules/reload` (admin): re-read the rule sets without a restart."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel

from central.auth import Principal, require
from provisioning.configfile import ConfigError


class ReloadResult(BaseModel):
    reloaded: bool
    problems: list[str]


def rules_router(reload: Callable[[], list[str]]) -> APIRouter:
    router = APIRouter(tags=["rules"])

    @router.post("/api/v1/rules/reload", response_model=ReloadResult)
    async def reload_rules(_: Principal = Depends(require("admin"))) -> ReloadResult:
        """Read the shipped and operator rule sets again; a bad file keeps the rules in force
        and answers 422 with its file, line and field."""
        try:
            problems = reload()
        except ConfigError as exc:
            raise HTTPException(422, str(exc)) from None
        return ReloadResult(reloaded=True, problems=problems)

    return router
