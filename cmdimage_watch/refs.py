"""Docker image references as Tilt uses them: parsing, registry rewriting and tags.

Parsing and normalisation come from docker-image-py (a port of distribution/reference);
this module adds Tilt's rules on top. Pure functions, no I/O: the loader feeds it spec
strings, and the builder and graph take names, tags and ImageMap names from it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from docker_image import digest as _digest
from docker_image import reference as _reference
from docker_image import regexp as _regexp

_DEFAULT_DOMAIN = "docker.io"
_OFFICIAL_PREFIX = "library/"
_INVALID_FORMAT = "invalid reference format"
_ESCAPES = str.maketrans("/:@", "___")
_MAX_NAME_LENGTH = 253  # Kubernetes' DNS-1123 subdomain limit, which Tilt applies to names


class RefError(ValueError):
    """A reference or tag that docker would refuse; str() is docker's own wording."""


@dataclass(frozen=True)
class Ref:
    """A normalised reference: `domain/path[:tag][@digest]`."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The fully qualified repository, without tag or digest."""
        return f"{self.domain}/{self.path}"

    def familiar_name(self) -> str:
        """The repository as `docker` prints it (docker's FamiliarName)."""
        if self.domain != _DEFAULT_DOMAIN:
            return self.name
        official = self.path.removeprefix(_OFFICIAL_PREFIX)
        return self.path if "/" in official else official

    def familiar(self) -> str:
        """The familiar name plus tag and digest (docker's FamiliarString)."""
        return self.familiar_name() + self._suffix()

    def with_tag(self, tag: str) -> Ref:
        """This repository tagged `tag`; a digest would pin other content, so it goes."""
        return replace(self, tag=validate_tag(tag), digest=None)

    def __str__(self) -> str:
        return self.name + self._suffix()

    def _suffix(self) -> str:
        tag = f":{self.tag}" if self.tag is not None else ""
        return tag + (f"@{self.digest}" if self.digest is not None else "")


@dataclass(frozen=True)
class Registry:
    """Tilt's RegistryHosting: where images are pushed, as seen from here and from the cluster."""

    host: str  # where we push: "localhost:5000", "gcr.io/my-project"; "" means no registry
    host_from_cluster: str = ""  # Tilt's hostFromContainerRuntime; "" means `host`
    single_name: str = ""  # push every image to this one repository (ECR); tags carry names


def parse_ref(text: str) -> Ref:
    """Parse `text` as docker does: `foo` is `docker.io/library/foo`; tag and digest kept."""
    return _parse(text, canonical=False)


def parse_tagged_ref(text: str) -> Ref:
    """Parse what a build script wrote as its image ref; surrounding whitespace is ignored."""
    ref = parse_ref(text.strip())
    if ref.tag is None:
        raise RefError(f"{text.strip()!r} has no tag: expected a reference like name:tag")
    return ref


def validate_tag(tag: str) -> str:
    """Return `tag` if docker accepts it as a tag (`[\\w][\\w.-]{0,127}`)."""
    if not _regexp.ImageRegexps.ANCHORED_TAG_REGEXP.fullmatch(tag):
        raise RefError(
            f'invalid tag "{tag}": a tag is up to 128 letters, digits, "_", "." and "-",'
            ' not starting with "." or "-"'
        )
    return tag


def escape_name(familiar_name: str) -> str:
    """Tilt's escapeName: `/`, `:` and `@` become `_`, so a whole name fits one path part."""
    return familiar_name.translate(_ESCAPES)


def image_map_name(ref: Ref) -> str:
    """The ImageMap a CmdImage with this ref publishes (Tilt's SanitizeName(FamiliarString))."""
    name = ref.familiar().replace("/", "_")
    if len(name) <= _MAX_NAME_LENGTH:
        return name
    # Tilt keeps over-long names unique by ending them with a hash of the whole name.
    return f"{name[: _MAX_NAME_LENGTH - 9]}-{_fnv1a_32(ref.familiar()):08x}"


def local_name(ref: Ref, registry: Registry | None) -> Ref:
    """The repository (no tag) the image gets in the local engine and is pushed as."""
    if registry is None:
        return _replace_registry(ref, "", "")
    return _replace_registry(ref, registry.host, registry.single_name)


def cluster_name(ref: Ref, registry: Registry | None) -> Ref:
    """The repository (no tag) the cluster's container runtime pulls."""
    if registry is None or not registry.host:
        return _replace_registry(ref, "", "")
    host = registry.host_from_cluster or registry.host
    return _replace_registry(ref, host, registry.single_name)


def build_tag(ref: Ref, registry: Registry | None, suffix: str) -> str:
    """Tilt's AddTagSuffix: with a single repository name, the tag carries the image's name."""
    if registry is not None and registry.single_name:
        basename = ref.path.rsplit("/", 1)[-1]
        return validate_tag(f"{escape_name(basename)}-{suffix}")
    return validate_tag(suffix)


def build_time_tag(unix_seconds: int) -> str:
    """The tag the build command is asked to produce (`$EXPECTED_TAG`)."""
    return f"tilt-build-{unix_seconds}"


def content_tag(image_id: str) -> str:
    """A tag that depends only on the image's content, so identical rebuilds keep it."""
    encoded = image_id.rpartition(":")[2]
    if len(encoded) < 16 or not set(encoded) <= set("0123456789abcdef"):
        raise RefError(f"image id {image_id!r} is not a digest like sha256:<64 hex digits>")
    return f"tilt-{encoded[:16]}"


def expected_image_path(ref: Ref) -> str:
    """`$EXPECTED_IMAGE`: the repository path without its domain."""
    return ref.path


def _replace_registry(ref: Ref, host: str, single_name: str) -> Ref:
    bare = Ref(ref.domain, ref.path)
    # A ref already under the registry is kept (tilt#4911: people write the registry in).
    if not host or ref.familiar_name().startswith(host + "/"):
        return bare
    text = f"{host}/{single_name or escape_name(ref.familiar_name())}"
    try:
        return _parse(text, canonical=True)
    except RefError as err:
        raise RefError(_registry_refused(host, text, err)) from err


def _registry_refused(host: str, text: str, err: RefError) -> str:
    message = f"registry {host!r} gives image name {text!r}, which docker refuses: {err}"
    if isinstance(err.__cause__, _reference.NameNotCanonical):
        # docker reads a first part with no "." or ":" as a Docker Hub namespace.
        return message + ' (a registry host needs a "." or a ":port", or is "localhost")'
    return message


def _parse(text: str, *, canonical: bool) -> Ref:
    # docker-image-py anchors with `$`, which also matches before a final newline.
    if not text or text.endswith("\n"):
        raise RefError(_INVALID_FORMAT)
    lib = _reference.Reference
    try:
        parsed = lib.parse_named(text) if canonical else lib.parse_normalized_named(text)
    except (_reference.InvalidReference, _digest.InvalidDigest) as err:
        raise RefError(_docker_wording(err)) from err
    tag, digest = parsed["tag"], parsed["digest"]
    return Ref(
        domain=str(parsed.domain()),
        path=str(parsed.path()),
        tag=str(tag) if tag else None,
        digest=str(digest) if digest else None,
    )


def _docker_wording(err: Exception) -> str:
    # The port words a few errors differently from go-digest / distribution/reference.
    if type(err) is _digest.InvalidDigest:
        return "invalid checksum digest format"
    if isinstance(err, _reference.NameEmpty):
        return _INVALID_FORMAT
    return str(err)


def _fnv1a_32(text: str) -> int:
    value = 0x811C9DC5
    for byte in text.encode():
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def under_registry(ref: Ref, registry: Registry | None) -> bool:
    """Whether `ref` is one of the registry's repositories; its host may hold a path
    (`gcr.io/my-project`), so this compares names, not domains."""
    return registry is not None and bool(registry.host) and ref.name.startswith(_prefix(registry))


def in_cluster(ref: Ref, registry: Registry | None) -> Ref:
    """A ref under the registry's host, as the cluster pulls it: under
    `hostFromContainerRuntime` (Tilt's readImageRef); any other ref as it is."""
    if registry is None or not registry.host_from_cluster or not under_registry(ref, registry):
        return ref
    rest = ref.name.removeprefix(_prefix(registry))
    moved = parse_ref(f"{registry.host_from_cluster.rstrip('/')}/{rest}")
    return replace(moved, tag=ref.tag, digest=ref.digest)


def _prefix(registry: Registry) -> str:
    return registry.host.rstrip("/") + "/"
