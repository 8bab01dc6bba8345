"""Pydantic mirrors of the tilt.dev/v1alpha1 objects this daemon reads and writes.

Field names are Tilt's camelCase through aliases; unknown fields are refused so that a typo
is an error, not a silently ignored setting. `specfiles` feeds raw YAML in; everything else
reads these frozen models.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from cmdimage_watch import refs

API_VERSION = "tilt.dev/v1alpha1"
REGISTRY_CACHE = "cmdimage-watch.dev/registry-cache"  # a Cluster annotation
MAX_NAME_LENGTH = 253  # Kubernetes' DNS-1123 subdomain limit, which Tilt's names share


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with microseconds, the form every status file uses."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


Time = Annotated[datetime, PlainSerializer(format_time, return_type=str)]


def _key_value(entry: str) -> str:
    if "=" not in entry:
        raise ValueError(f"{entry!r} is not KEY=VALUE; each entry sets one variable, like FOO=bar")
    return entry


EnvVar = Annotated[str, AfterValidator(_key_value)]  # checked one by one, so errors name the item


class Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,  # a field's docstring is its description in `schema`
    )


class ObjectMeta(Model):
    """Kubernetes ObjectMeta: `name` is ours; its other fields are accepted, unread, so
    `tilt get -o yaml` output loads; a field ObjectMeta lacks (`lables`) is a typo."""

    name: str = Field(min_length=1)
    """The object's name: unique per kind in the tree, at most 253 characters, no '/'."""
    generate_name: Any = None
    namespace: Any = None
    self_link: Any = None
    uid: Any = None
    resource_version: Any = None
    generation: Any = None
    creation_timestamp: Any = None
    deletion_timestamp: Any = None
    deletion_grace_period_seconds: Any = None
    labels: Any = None
    annotations: Any = None
    owner_references: Any = None
    finalizers: Any = None
    managed_fields: Any = None
    cluster_name: Any = None  # in exports from Kubernetes before 1.25

    @field_validator("name")
    @classmethod
    def _is_a_path_segment(cls, value: str) -> str:
        # Kubernetes' rule for names, which also keeps log and state files in their folder
        if value in (".", "..") or "/" in value or "%" in value:
            raise ValueError(f"{value!r} cannot be a name: no '/' or '%', and not '.' or '..'")
        if len(value) > MAX_NAME_LENGTH:
            raise ValueError(
                f"a name is at most {MAX_NAME_LENGTH} characters, as in Kubernetes; this one "
                f"has {len(value)}"
            )
        if any(ch < " " or ch == "\x7f" for ch in value):
            raise ValueError(
                f"{value!r} cannot be a name: no control characters (a newline would split "
                "log lines and table rows)"
            )
        return value


# --- CmdImage ---------------------------------------------------------------------------


class CmdImageSpec(Model):
    ref: str
    """The image to build, as a docker reference (`app`, `gcr.io/team/app`). Its content tag
    is added at each build; the CmdImage publishes the ImageMap named after it."""
    args: list[str] = Field(min_length=1)
    """The command and its arguments, run without a shell; at least one."""
    dir: str = ""
    """The command's working folder, relative to this spec file's folder (empty: that
    folder). With no FileWatch for the image, its sources are this folder minus its
    .dockerignore."""
    env: list[EnvVar] = []
    """Variables added to the command's environment, each `KEY=VALUE`."""
    image_maps: list[str] = []
    """The ImageMaps this build depends on: each is resolved to an image ref
    ($TILT_IMAGE_0, ...), and a new image in one rebuilds this image."""
    output_mode: Literal["", "local-docker", "local-docker-and-remote", "remote"] = ""
    """Where the command puts the image: `local-docker` (the default: the engine's image
    store), `local-docker-and-remote` (the store, and pushed by the command), or `remote`
    (pushed by the command only)."""
    output_tag: str = ""
    """The tag the command always builds; empty means the daemon picks one and passes it
    as $EXPECTED_REF. Not with outputsImageRefTo."""
    outputs_image_ref_to: str = ""
    """A file (relative to this spec file's folder) the command writes the ref it built
    to. Not with outputTag."""
    cluster: str = ""
    """The Cluster whose registry and engine this image uses; empty means `default`."""
    cluster_needs: Literal["", "push", "base-image"] = ""
    """What the cluster needs of the image: `push` (the default) or `base-image`."""

    @field_validator("ref")
    @classmethod
    def _ref_parses(cls, value: str) -> str:
        refs.parse_ref(value)
        return value

    @field_validator("output_tag")
    @classmethod
    def _tag_is_valid(cls, value: str) -> str:
        return refs.validate_tag(value) if value else value

    @model_validator(mode="after")
    def _one_tag_mode(self) -> Self:
        if self.output_tag and self.outputs_image_ref_to:
            raise ValueError(
                "outputTag and outputsImageRefTo cannot both be set: use outputTag when the "
                "command always builds one tag, outputsImageRefTo when it writes the ref to a file"
            )
        return self


class CmdImageStateWaiting(Model):
    reason: str


class CmdImageStateBuilding(Model):
    reason: str
    started_at: Time


class CmdImageStateCompleted(Model):
    reason: str = ""
    error: str = ""
    started_at: Time
    finished_at: Time


class CmdImageStatus(Model):
    ref: str = ""
    waiting: CmdImageStateWaiting | None = None
    building: CmdImageStateBuilding | None = None
    completed: CmdImageStateCompleted | None = None


class CmdImage(Model):
    api_version: Literal["tilt.dev/v1alpha1"]
    kind: Literal["CmdImage"]
    metadata: ObjectMeta
    spec: CmdImageSpec
    status: Any = None  # written by Tilt or by us; never read back from a spec file


# --- ImageMap ---------------------------------------------------------------------------


class ImageMapOverrideCommand(Model):
    command: list[str] = []


class ImageMapOverrideArgs(Model):
    args: list[str] = []


class ImageMapSpec(Model):
    selector: str
    """The image ref this map stands for, as a docker reference."""
    match_exact: StrictBool = False
    """Match the selector's tag as well as its name (Tilt's field; not read here)."""
    match_in_env_vars: StrictBool = False
    """Also match refs in environment variables (Tilt's field; not read here)."""
    override_command: ImageMapOverrideCommand | None = None
    override_args: ImageMapOverrideArgs | None = None

    @field_validator("selector")
    @classmethod
    def _selector_parses(cls, value: str) -> str:
        refs.parse_ref(value)
        return value


class ImageMapStatus(Model):
    image: str = ""
    """The image this map resolves to; written by hand for an image built elsewhere."""
    image_from_local: str = ""
    """The image as this machine's engine names it."""
    image_from_cluster: str = ""
    """The image as the cluster names it."""
    build_start_time: Time | None = None
    """When the build of this image started."""


class ImageMap(Model):
    api_version: Literal["tilt.dev/v1alpha1"]
    kind: Literal["ImageMap"]
    metadata: ObjectMeta
    spec: ImageMapSpec
    status: ImageMapStatus | None = None  # a hand-written status names an image built elsewhere


# --- FileWatch --------------------------------------------------------------------------


class IgnoreDef(Model):
    base_path: str
    """The folder the patterns are relative to (relative to this spec file's folder)."""
    patterns: list[str] = []
    """Patterns in .dockerignore syntax; empty ignores the whole basePath."""


class FileWatchSpec(Model):
    watched_paths: list[str] = []
    """Files and folders to watch, relative to this spec file's folder. For the FileWatch
    named `image:<imagemap>`, the sources of the CmdImage publishing that map; empty turns
    source watching off."""
    ignores: list[IgnoreDef] = []
    """What under the watched paths is no source."""
    disable_source: dict[str, Any] | None = None
    """Tilt's switch for turning the watch off from a ConfigMap (not read here)."""


class FileEvent(Model):
    time: Time
    seen_files: list[str] = []


class FileWatchStatus(Model):
    monitor_start_time: Time | None = None
    last_event_time: Time | None = None
    file_events: list[FileEvent] = []
    error: str = ""


class FileWatch(Model):
    api_version: Literal["tilt.dev/v1alpha1"]
    kind: Literal["FileWatch"]
    metadata: ObjectMeta
    spec: FileWatchSpec
    status: Any = None


# --- Cluster ----------------------------------------------------------------------------


class DockerClusterConnection(Model):
    host: str = ""
    """The Docker engine for this cluster's builds (`unix:///...`, `tcp://host:2376`):
    the commands' DOCKER_HOST and the daemon's own client."""


class ClusterConnection(Model):
    kubernetes: dict[str, Any] | None = None
    docker: DockerClusterConnection | None = None


class RegistryHosting(Model):
    """Tilt's RegistryHosting, validated as its Validate does: `host` is required once a
    defaultRegistry is given at all, and `host` and `hostFromContainerRuntime` must each be
    a registry docker reads `<host>/fake` in."""

    host: str = Field(default="", validate_default=True)
    """The registry images are pushed to, as this machine reaches it (`localhost:5000`)."""
    host_from_container_runtime: str = ""
    """The same registry as the cluster's container runtime reaches it, if it differs."""
    host_from_cluster_network: str = ""
    """The same registry as pods reach it (Tilt's field; not read here)."""
    help: str = ""
    """A note for people (Tilt's field; not read here)."""
    single_name: str = ""
    """Push every image under this one repository name, tagged by image (for registries
    such as ECR that want one repository)."""

    @field_validator("host")
    @classmethod
    def _host_is_given(cls, value: str) -> str:
        if not value:
            raise ValueError(
                "Required value: the registry host that images are pushed to (such as "
                "localhost:5000); hostFromContainerRuntime and singleName only add to it"
            )
        return value

    @field_validator("host", "host_from_container_runtime")
    @classmethod
    def _is_a_registry(cls, value: str) -> str:
        if value:
            try:
                refs.validate_registry_host(value)
            except refs.RefError as err:
                raise ValueError(f'Invalid value: "{value}": {err}') from None
        return value

    @field_validator("single_name")
    @classmethod
    def _is_a_path(cls, value: str) -> str:
        if value:
            refs.parse_ref(f"localhost/{value}")
        return value


class ClusterSpec(Model):
    connection: ClusterConnection | None = None
    """How to reach the cluster; only `docker.host` is read."""
    default_registry: RegistryHosting | None = None
    """The registry this cluster's images are pushed to; none keeps them in the engine."""


class Cluster(Model):
    api_version: Literal["tilt.dev/v1alpha1"]
    kind: Literal["Cluster"]
    metadata: ObjectMeta
    spec: ClusterSpec = ClusterSpec()
    status: Any = None

    @property
    def registry(self) -> refs.Registry | None:
        reg = self.spec.default_registry
        if reg is None or not reg.host:
            return None
        return refs.Registry(reg.host, reg.host_from_container_runtime, reg.single_name)

    @property
    def registry_cache(self) -> bool:
        """`cmdimage-watch.dev/registry-cache: "true"`: reuse builds through the registry."""
        annotations = self.metadata.annotations
        value = annotations.get(REGISTRY_CACHE) if isinstance(annotations, dict) else None
        return value is True or str(value).lower() == "true"  # `true` unquoted is a bool

    @property
    def docker_host(self) -> str:
        conn = self.spec.connection
        return conn.docker.host if conn and conn.docker else ""


TiltObject = CmdImage | ImageMap | FileWatch | Cluster
MODELS: dict[str, type[TiltObject]] = {
    "CmdImage": CmdImage,
    "ImageMap": ImageMap,
    "FileWatch": FileWatch,
    "Cluster": Cluster,
}
LIST_KINDS = {"CmdImageList": "CmdImage", "ImageMapList": "ImageMap"}
