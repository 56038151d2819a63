"""The HTTP service: one study server for a team (FastAPI, served by uvicorn: ``bayes-epm serve``).

Every answer comes from the same functions as the command line (:func:`bayes_epm.posterior_store.open_fit`
then :mod:`bayes_epm.queries` and :mod:`bayes_epm.decisions`; :func:`bayes_epm.sweep.status` and
:func:`~bayes_epm.sweep.propose_only`; :func:`bayes_epm.priors.load_prior_text`), so the numbers are
the CLI's. Errors: a bad value is 422 with the reason (``{"detail": "..."}``), an unknown study 404,
a study without a fit yet 409, a missing or wrong bearer token 401. A study id is one path
component of the studies directory (letters, digits, ``.``, ``_``, ``-``; not starting with a dot):
nothing outside the directory can be named.

Reads never block on a sweep writing the same study: the run database is SQLite in WAL mode, and a
study's fit is a versioned directory swapped atomically (:mod:`bayes_epm.posterior_store`), read
once per fit and cached while unchanged.

Authentication: bound to loopback the service is open unless a token is given, and answers only
requests addressed to a loopback name (no DNS rebinding); bound to any other address it refuses to
start without a token. With a token every request needs ``Authorization: Bearer <token>``; the
dashboard page and its figures also take ``?token=`` so that a browser can open them, and the
OpenAPI schema is served behind the token (the interactive /docs pages only without one). A prior
file must be sent as ``application/toml``, a type no web page can send cross-site unasked.

Known limit: compression methods imported from prior files are registered per process, by name. Two
studies on one server that define a method of the same name with different code share one GMSE
table (the last study read); give methods unique names.
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
from pathlib import Path
from typing import Optional

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from bayes_epm import __version__
from bayes_epm.errors import InvalidInputError, NotFittedError
from bayes_epm.queries import json_safe

STUDY_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
MIN_TOKEN_LENGTH = 16
MAX_PRIOR_BYTES = 1 << 20
MAX_PROPOSALS = 64


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_token(host: str, token: str | None) -> None:
    """Refuse a token that is too short, and a non-loopback address without one."""
    if token is not None and len(token.strip()) < MIN_TOKEN_LENGTH:
        raise InvalidInputError(f"the bearer token is {len(token.strip())} characters; it must be at least "
                                f"{MIN_TOKEN_LENGTH} (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    if token is None and not is_loopback(host):
        raise InvalidInputError(f"--host {host} is not a loopback address: the service then needs a bearer token "
                                "(environment variable BAYES_EPM_TOKEN, or --token-file FILE); without one it binds "
                                "to 127.0.0.1 only")


def _records(frame) -> list[dict]:
    return json_safe(frame.astype(object).where(frame.notna(), None).to_dict("records"))


def create_app(studies_dir: str | Path, token: str | None = None, trusted_hosts: list[str] | None = None) -> FastAPI:
    """The application, serving the studies under ``studies_dir``. ``trusted_hosts``: the only Host
    headers answered (:func:`serve` passes the loopback names when bound to loopback, so that a web
    page cannot reach the server through a rebound DNS name)."""
    root = Path(studies_dir).resolve()
    if not root.is_dir():
        raise InvalidInputError(f"--studies {str(studies_dir)!r} is not a directory")
    expected = token.strip() if token else None

    app = FastAPI(title="bayes-epm", version=__version__,
                  description="EPMs of compression formats, with honest uncertainty: queries, decisions and sweeps "
                              "of the studies in one directory.",
                  # with a token the schema is served behind it (below), and the interactive pages not at all
                  docs_url=None if expected else "/docs", redoc_url=None if expected else "/redoc",
                  openapi_url=None if expected else "/openapi.json")
    if trusted_hosts:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=trusted_hosts)

    def scrub(text: str) -> str:
        """A message without the server's own paths (a study is named by its id)."""
        return text.replace(str(root) + "/", "").replace(str(root), "<studies>")

    def authorise(request: Request) -> None:
        if expected is None:
            return
        header = request.headers.get("authorization", "")
        page = request.url.path.endswith("/report") or "/plots/" in request.url.path  # what a browser opens
        given = header[7:].strip() if header.lower().startswith("bearer ") else (
            request.query_params.get("token", "") if page else "")
        if not secrets.compare_digest(given.encode(), expected.encode()):
            raise HTTPException(401, "a bearer token is required (Authorization: Bearer <token>)",
                                headers={"WWW-Authenticate": "Bearer"})

    def study_path(study_id: str) -> Path:
        if not STUDY_ID.fullmatch(study_id):
            raise InvalidInputError(f"study id {study_id!r} is not valid: one name of the studies directory "
                                    "(letters, digits, '.', '_', '-'; not starting with '.')")
        path = root / study_id
        if path.resolve().parent != root or not (path / "study.toml").is_file():
            raise HTTPException(404, f"no study {study_id!r} in the studies directory")
        return path

    @app.exception_handler(NotFittedError)
    async def not_fitted(_: Request, exc: NotFittedError) -> JSONResponse:
        return JSONResponse({"detail": scrub(str(exc))}, status_code=409)

    @app.exception_handler(InvalidInputError)
    async def invalid(_: Request, exc: InvalidInputError) -> JSONResponse:
        return JSONResponse({"detail": scrub(str(exc))}, status_code=422)

    guarded = [Depends(authorise)]

    if expected:
        @app.get("/openapi.json", dependencies=guarded, include_in_schema=False)
        def openapi() -> dict:
            return app.openapi()

    def fit_of(study_id: str):
        from bayes_epm.posterior_store import open_fit

        return open_fit(study_path(study_id), cached=True)

    @app.get("/health", dependencies=guarded)
    def health() -> dict:
        return {"status": "ok", "version": __version__}

    @app.get("/studies", dependencies=guarded)
    def studies() -> dict:
        from bayes_epm.store import Study

        out = []
        for path in sorted(p for p in root.iterdir() if (p / "study.toml").is_file() and STUDY_ID.fullmatch(p.name)):
            with Study.open(path) as st:
                out.append({"id": path.name, "counts": st.counts(), "flops_spent": st.flops_spent(),
                            "flops_budget": st.config.budget.flops,
                            "fitted": (st.posterior_dir / "fit.json").is_file()})
        return {"studies": json_safe(out)}

    @app.get("/studies/{study_id}", dependencies=guarded)
    def study(study_id: str) -> dict:
        from bayes_epm.store import Study
        from bayes_epm.sweep import status

        with Study.open(study_path(study_id)) as st:
            out = status(st, cached=True)
            out.update(id=study_id, config=st.config.to_dict(), last_update=st.last_update())
        out["study"] = study_id  # the id, not the server's path
        out["fraction_spent"] = out["flops_spent"] / out["flops_budget"]
        return json.loads(scrub(json.dumps(json_safe(out))))  # prior files' paths, relative to the studies

    @app.get("/studies/{study_id}/runs", dependencies=guarded)
    def runs(study_id: str, status: Optional[str] = None) -> dict:
        from bayes_epm.store import Study

        with Study.open(study_path(study_id)) as st:
            table = st.runs(status)
        return {"runs": _records(table.drop(columns=["spec", "result"]))}

    @app.get("/studies/{study_id}/epm", dependencies=guarded)
    def epm(study_id: str, format: str, hdi: float = 0.9) -> dict:
        from bayes_epm.queries import epm as query

        saved = fit_of(study_id)
        return json_safe(query(saved.idata, format, hdi, saved.priors))

    @app.get("/studies/{study_id}/compare", dependencies=guarded)
    def compare(study_id: str, a: str, b: str, hdi: float = 0.9) -> dict:
        from bayes_epm.queries import compare as query

        saved = fit_of(study_id)
        return json_safe(query(saved.idata, a, b, hdi, saved.priors))

    @app.get("/studies/{study_id}/predict", dependencies=guarded)
    def predict(study_id: str, params: float, tokens: float, format: str = "dense", hdi: float = 0.9) -> dict:
        from bayes_epm.queries import predict as query

        saved = fit_of(study_id)
        return json_safe(query(saved.idata, params, tokens, format, hdi, saved.priors))

    def _formats(formats: str | None) -> list[str] | None:
        if formats is None:
            return None
        names = [f.strip() for f in formats.split(",") if f.strip()]
        if not names:
            raise InvalidInputError("formats is empty; give format names, comma-separated (e.g. w4,w4a4,s0.5)")
        return names

    @app.get("/studies/{study_id}/recommend", dependencies=guarded)
    def recommend(study_id: str, memory_bytes: str, train_flops: Optional[float] = None,
                  tokens: Optional[float] = None, tokens_per_param: Optional[float] = None,
                  formats: Optional[str] = None, min_params: Optional[float] = None, hdi: float = 0.9) -> dict:
        from bayes_epm.decisions import recommend as decide

        return json_safe(decide(fit_of(study_id), memory_bytes, train_flops=train_flops, tokens=tokens,
                                 tokens_per_param=tokens_per_param, formats=_formats(formats),
                                 min_params=min_params, hdi=hdi))

    @app.get("/studies/{study_id}/frontier", dependencies=guarded)
    def frontier(study_id: str, train_flops: Optional[float] = None, tokens: Optional[float] = None,
                 tokens_per_param: Optional[float] = None, formats: Optional[str] = None,
                 min_bytes: Optional[str] = None, max_bytes: Optional[str] = None, points: int = 24,
                 min_params: Optional[float] = None, hdi: float = 0.9) -> dict:
        from bayes_epm.decisions import frontier as draw

        return json_safe(draw(fit_of(study_id), train_flops=train_flops, tokens=tokens,
                               tokens_per_param=tokens_per_param, formats=_formats(formats), min_bytes=min_bytes,
                               max_bytes=max_bytes, points=points, min_params=min_params, hdi=hdi))

    @app.post("/studies/{study_id}/proposals", dependencies=guarded)
    def proposals(study_id: str, n: int = Query(4, ge=1, le=MAX_PROPOSALS)) -> dict:
        from bayes_epm.store import Study
        from bayes_epm.sweep import propose_only

        with Study.open(study_path(study_id)) as st:
            table = propose_only(st, n)
        return {"runs": _records(table[["params", "tokens", "format", "flops", "score"]]),
                "note": "proposed, not started and not stored"}

    def import_priors(path: Path, body: bytes, replace: bool) -> list:
        from bayes_epm.priors import load_prior_text, summary
        from bayes_epm.store import Study

        with Study.open(path) as st:
            try:
                new = load_prior_text(body, root / "request-body.toml", literature=st.config.priors.literature,
                                      code=False, studies_root=root)
            except NotFittedError as exc:  # a from_posterior study without a fit: the file is what is wrong
                raise InvalidInputError(str(exc)) from None
            st.import_priors(new, replace=replace)
        return json_safe(summary(new)["methods"])

    @app.post("/studies/{study_id}/priors", dependencies=guarded)
    async def priors(study_id: str, request: Request, replace: bool = False) -> dict:
        from starlette.concurrency import run_in_threadpool

        path = study_path(study_id)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/toml":
            # not a type a web page may send without asking first (CORS): no cross-site import
            raise InvalidInputError(f"Content-Type {kind or 'none'!r} is not valid; send the prior file as "
                                    "application/toml")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_PRIOR_BYTES:
            raise InvalidInputError(f"the prior file is {declared} bytes; at most {MAX_PRIOR_BYTES} are accepted")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_PRIOR_BYTES:
                raise InvalidInputError(f"the prior file is over {MAX_PRIOR_BYTES} bytes; at most that is accepted")
        if not body:
            raise InvalidInputError("the request body is empty; send the prior file's TOML ([method.NAME] tables)")
        imported = await run_in_threadpool(import_priors, path, body, replace)  # files and SQLite: off the loop
        return {"imported": imported, "study": study_id,
                "note": "the study's next fit uses these priors; a sweep already running reads its priors when it "
                        "starts: restart it (`bayes-epm sweep resume`) for them to count"}

    @app.get("/studies/{study_id}/report", response_class=HTMLResponse, dependencies=guarded)
    def report(study_id: str, request: Request, refresh: int = Query(15, ge=0, le=3600)) -> HTMLResponse:
        from bayes_epm.report import dashboard

        token = request.query_params.get("token") if expected else None
        return HTMLResponse(dashboard(study_path(study_id), study_id, refresh=refresh, token=token))

    @app.get("/studies/{study_id}/plots/{name}.png", dependencies=guarded)
    def plot(study_id: str, name: str) -> Response:
        from bayes_epm.report import PLOTS, render_plot

        if name not in PLOTS:
            raise HTTPException(404, f"no plot {name!r}; valid: {', '.join(PLOTS)}")
        return Response(render_plot(study_path(study_id), name), media_type="image/png",
                        headers={"Cache-Control": "no-store"})

    return app


def serve(studies_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, token: str | None = None) -> None:
    """Run the service until interrupted (checks the token rule first: :func:`check_token`)."""
    import uvicorn

    check_token(host, token)
    trusted = ["127.0.0.1", "localhost", "::1", "[::1]"] if is_loopback(host) else None
    uvicorn.run(create_app(studies_dir, token, trusted_hosts=trusted), host=host, port=port, log_level="info")


def read_token(token_file: str | None, environ: dict[str, str]) -> str | None:
    """The bearer token: ``--token-file`` (its first line) or ``BAYES_EPM_TOKEN``; None when neither."""
    if token_file:
        path = Path(token_file)
        if not path.is_file():
            raise InvalidInputError(f"--token-file {token_file!r} does not exist")
        lines = path.read_text().splitlines()
        return lines[0].strip() if lines else ""
    value = environ.get("BAYES_EPM_TOKEN")
    return value.strip() if value is not None else None


__all__ = ["check_token", "create_app", "is_loopback", "read_token", "serve"]
