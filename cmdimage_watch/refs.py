"""Docker image references as Tilt uses them: parsing, registry rewriting and tags.

Parsing follows Go's distribution/reference (ParseNormalizedNamed, ParseNamed) step by step,
on the grammar docker-image-py ports from it; this module adds Tilt's rules on top. Pure
functions, no I/O: the loader feeds it spec strings, and the builder and graph take names,
tags and ImageMap names from it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from docker_image import digest as _digest
from docker_image import regexp as _regexp

_DEFAULT_DOMAIN = "docker.io"
_LEGACY_DEFAULT_DOMAIN = "index.docker.io"
_OFFICIAL_PREFIX = "library/"
_INVALID_FORMAT = "invalid reference format"
_NOT_CANONICAL = "repository name must be canonical"
_MAX_REPOSITORY_LENGTH = 255  # distribution/reference's RepositoryNameTotalLengthMax
_GRAMMAR = _regexp.ImageRegexps
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
        """The fully qualified repository, without tag or digest. A first part that is no
        valid host (`aws_account_id.dkr.ecr…`, with its underscore) leaves the domain empty,
        as in Go: the whole name is then the path."""
        return f"{self.domain}/{self.path}" if self.domain else self.path

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


def validate_registry_host(host: str) -> None:
    """Tilt's RegistryHosting.Validate of `host` or `hostFromContainerRuntime`: docker must
    read `<host>/fake` as it is, a name in that registry."""
    try:
        _parse(f"{host}/fake", canonical=True)
    except RefError as err:
        raise RefError(_with_hint(str(err))) from None


def validate_ref_set(ref: Ref, registry: Registry | None) -> None:
    """Tilt's NewRefSet: the local and the cluster name of `ref` under `registry` must both
    be names docker takes."""
    local_name(ref, registry)
    cluster_name(ref, registry)


def _replace_registry(ref: Ref, host: str, single_name: str) -> Ref:
    bare = Ref(ref.domain, ref.path)
    # A ref already under the registry is kept (tilt#4911: people write the registry in).
    if not host or ref.familiar_name().startswith(host + "/"):
        return bare
    text = f"{host}/{single_name or escape_name(ref.familiar_name())}"
    try:
        moved = _parse(text, canonical=True)
        # Tilt's distribution/reference counts the whole name, registry included.
        if len(moved.name) > _MAX_REPOSITORY_LENGTH:
            raise RefError(
                f"repository name must not be more than {_MAX_REPOSITORY_LENGTH} characters "
                f"(it is {len(moved.name)})"
            )
    except RefError as err:
        raise RefError(
            f"Error parsing {text} after applying default registry {host}: {_with_hint(str(err))}"
        ) from None
    return moved


def _with_hint(message: str) -> str:
    if message != _NOT_CANONICAL:
        return message
    # docker reads a first part with no "." or ":" as a Docker Hub namespace.
    return message + ' (a registry host needs a "." or a ":port", or is "localhost")'


def _parse(text: str, *, canonical: bool) -> Ref:
    """Go's ParseNormalizedNamed, or with `canonical` its ParseNamed, which also refuses any
    text that normalising would change (`invalid/fake` is `docker.io/invalid/fake`)."""
    if _GRAMMAR.ANCHORED_IDENTIFIER_REGEXP.fullmatch(text):
        raise RefError(
            f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings"
        )
    domain, remainder = _split_docker_domain(text)
    remote_name = remainder.partition(":")[0]
    if remote_name.lower() != remote_name:
        raise RefError(f"{_INVALID_FORMAT}: repository name ({remote_name}) must be lowercase")
    ref = _parse_raw(f"{domain}/{remainder}")
    if canonical and str(ref) != text:
        raise RefError(_NOT_CANONICAL)
    return ref


def _split_docker_domain(name: str) -> tuple[str, str]:
    """Go's splitDockerDomain: whether the first part names a registry, and Docker Hub's
    `library/` for a one-part name."""
    first, slash, rest = name.partition("/")
    if not slash:
        return _DEFAULT_DOMAIN, _OFFICIAL_PREFIX + name
    if first == _LEGACY_DEFAULT_DOMAIN:
        domain, remainder = _DEFAULT_DOMAIN, rest
    elif first == "localhost" or "." in first or ":" in first or first.lower() != first:
        domain, remainder = first, rest  # upper case: Docker Hub namespaces cannot hold it
    else:
        return _DEFAULT_DOMAIN, name
    if domain == _DEFAULT_DOMAIN and "/" not in remainder:
        remainder = _OFFICIAL_PREFIX + remainder
    return domain, remainder


def _parse_raw(text: str) -> Ref:
    """Go's Parse: the grammar, then the path's length and the digest."""
    found = _GRAMMAR.REFERENCE_REGEXP.fullmatch(text)  # fullmatch: `$` allows a final "\n"
    if found is None:
        lower = text.lower()
        if lower != text and _GRAMMAR.REFERENCE_REGEXP.fullmatch(lower):
            raise RefError("repository name must be lowercase")
        raise RefError(_INVALID_FORMAT)
    name, tag, digest = found.groups()
    parts = _GRAMMAR.ANCHORED_NAME_REGEXP.fullmatch(name)
    domain, path = (parts.group(1) or "", parts.group(2)) if parts else ("", name)
    if len(path) > _MAX_REPOSITORY_LENGTH:
        raise RefError(f"repository name must not be more than {_MAX_REPOSITORY_LENGTH} characters")
    if digest:
        _validate_digest(digest)
    return Ref(domain=domain, path=path, tag=tag or None, digest=digest or None)


def _validate_digest(digest: str) -> None:
    """go-digest's Validate, in its wording (docker-image-py words the plain case its own way)."""
    try:
        _digest.validate_digest(digest)
    except _digest.InvalidDigest as err:
        if type(err) is _digest.InvalidDigest:
            raise RefError("invalid checksum digest format") from None
        raise RefError(str(err)) from None


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
