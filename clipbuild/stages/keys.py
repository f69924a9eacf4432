"""The keys stage: the plan's trust policy rendered as the device's trust store (clipbuild.signing.truststore),
written by the `render-keys` step and packaged by the overlay's clip-conf/clip-update-keys through the normal
build, package and sign path (the build step of clip/core mounts this step's tree at /build/keys for it).

Which policy: the plan's, the one its image verifies packages with (`trust_policy`). A development plan embeds
the development PKI's; a release plan (`--release`) the release policy (--policy, else the profile's
signing.policy). The step's options carry every rendered file's digest, so a new CA, CRL or rule changes the
step's key, and inside the clip/core build only clip-update-keys is rebuilt (its binpkg is keyed on the tree).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from clipbuild.core.errors import InputError, StepError
from clipbuild.core.plan import PlanSettings, Step, StepContext, StepKind
from clipbuild.core.project import Project
from clipbuild.signing import devpki, truststore
from clipbuild.signing.devpki import DEVELOPMENT, RELEASE
from clipbuild.spec.model import Profile

STEP = "keys"


@dataclass(frozen=True)
class KeysOptions:
    species: str
    mode: str  # development or release: whose policy this is
    policy: str  # the trust policy file (absolute)
    files: tuple[dict[str, str], ...] = field(default=())  # every rendered file: {"path", "sha256"}, sorted


class RenderKeys(StepKind):
    name = "render-keys"
    version = 1
    Options = KeysOptions
    outputs = (f"tree/{truststore.KEYS_DIR}/{truststore.POLICY_FILE}",)

    def parse_options(self, options: dict) -> KeysOptions:
        return KeysOptions(options["species"], options["mode"], options["policy"], tuple(options["files"]))

    def run(self, ctx: StepContext) -> None:
        opts: KeysOptions = ctx.options
        files = truststore.render(Path(opts.policy))
        if _listing(files) != opts.files:
            raise StepError(ctx.step.id, f"the trust policy {opts.policy} (or a CA or CRL it names) changed "
                            "since the plan was made", detail=["  run the command again"])
        truststore.write(files, ctx.out / "tree")
        ctx.progress(f"trust store of the {opts.mode} policy: {len(files)} files")


def _listing(files: dict[str, bytes]) -> tuple[dict[str, str], ...]:
    return tuple({"path": name, "sha256": digest} for name, digest in truststore.digests(files).items())


def trust_policy(profile: Profile, project: Project, settings: PlanSettings) -> Path:
    """The plan's trust policy: the development PKI's, or for a release --policy, else signing.policy."""
    if not settings.release:
        return devpki.ensure().policy_path
    if settings.policy:
        return Path(settings.policy).resolve()
    if profile.signing.policy:
        return project.root / profile.signing.policy
    raise InputError("a release needs a trust policy: give --policy FILE or set signing.policy in the profile",
                     hint="the image verifies packages with it, and clip-update-keys installs it on the device")


def plan_keys(profile: Profile, project: Project, settings: PlanSettings) -> list[Step]:
    policy = trust_policy(profile, project, settings)
    files = truststore.render(policy)
    options = KeysOptions(profile.species, RELEASE if settings.release else DEVELOPMENT, str(policy),
                          _listing(files))
    return [RenderKeys.step(STEP, options, description=f"render the {options.mode} trust store "
                            f"({len(files)} files)")]
