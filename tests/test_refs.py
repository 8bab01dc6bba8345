"""Tables for cmdimage_watch.refs: docker's parsing and wording, Tilt's registry and tag rules.

Expected strings come from docker / distribution/reference and from Tilt's own tests
(internal/container/registry_test.go, pkg/apis/identifiers_test.go).
"""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from cmdimage_watch.refs import (
    Ref,
    RefError,
    Registry,
    build_tag,
    build_time_tag,
    cluster_name,
    content_tag,
    escape_name,
    expected_image_path,
    image_map_name,
    in_cluster,
    local_name,
    parse_ref,
    parse_tagged_ref,
    under_registry,
    validate_ref_set,
    validate_registry_host,
    validate_tag,
)

HEX64 = "0123456789abcdef" * 4
DIGEST = f"sha256:{HEX64}"
LOCAL = Registry("localhost:5000")
KIND = Registry("localhost:5000", host_from_cluster="registry:5000")
ECR = Registry("localhost:5000", single_name="app")


@pytest.mark.parametrize(
    ("text", "full", "familiar"),
    [
        ("foo", "docker.io/library/foo", "foo"),
        ("foo:dev", "docker.io/library/foo:dev", "foo:dev"),
        ("foo:Dev_1.2-x", "docker.io/library/foo:Dev_1.2-x", "foo:Dev_1.2-x"),
        ("foo/bar", "docker.io/foo/bar", "foo/bar"),
        ("library/foo", "docker.io/library/foo", "foo"),
        ("docker.io/library/foo", "docker.io/library/foo", "foo"),
        ("index.docker.io/foo", "docker.io/library/foo", "foo"),
        ("docker.io/library/a/b", "docker.io/library/a/b", "library/a/b"),
        ("gcr.io/foo/bar", "gcr.io/foo/bar", "gcr.io/foo/bar"),
        ("localhost/foo", "localhost/foo", "localhost/foo"),
        ("localhost:5000/foo:1", "localhost:5000/foo:1", "localhost:5000/foo:1"),
        ("[::1]:5000/foo", "[::1]:5000/foo", "[::1]:5000/foo"),
        ("a.b/c/d/e", "a.b/c/d/e", "a.b/c/d/e"),
        ("foo.bar", "docker.io/library/foo.bar", "foo.bar"),
        ("foo__bar--baz", "docker.io/library/foo__bar--baz", "foo__bar--baz"),
        (f"foo@{DIGEST}", f"docker.io/library/foo@{DIGEST}", f"foo@{DIGEST}"),
        (f"gcr.io/a/b:t@{DIGEST}", f"gcr.io/a/b:t@{DIGEST}", f"gcr.io/a/b:t@{DIGEST}"),
        # Tags may be upper case; only the repository must be lower case.
        ("foo:LATEST", "docker.io/library/foo:LATEST", "foo:LATEST"),
        # distribution/reference reads a bare "sha256:<hex>" as name sha256, tag <hex>.
        (f"sha256:{HEX64}", f"docker.io/library/sha256:{HEX64}", f"sha256:{HEX64}"),
    ],
)
def test_parse_ref_normalises_like_docker(text: str, full: str, familiar: str) -> None:
    ref = parse_ref(text)
    assert str(ref) == full
    assert ref.familiar() == familiar


def test_parse_ref_fields() -> None:
    ref = parse_ref(f"localhost:5000/a/b:t@{DIGEST}")
    assert ref == Ref("localhost:5000", "a/b", "t", DIGEST)
    assert ref.name == "localhost:5000/a/b"
    assert ref.familiar_name() == "localhost:5000/a/b"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Foo", "invalid reference format: repository name (library/Foo) must be lowercase"),
        ("foo/Bar:v1", "invalid reference format: repository name (foo/Bar) must be lowercase"),
        ("gcr.io/Foo/bar", "invalid reference format: repository name (Foo/bar) must be lowercase"),
        (
            HEX64,
            f"invalid repository name ({HEX64}), cannot specify 64-byte hexadecimal strings",
        ),
        ("", "invalid reference format"),
        (" foo", "invalid reference format"),
        ("foo\n", "invalid reference format"),
        ("foo:bar\n", "invalid reference format"),
        ("foo:bad tag", "invalid reference format"),
        ("foo:", "invalid reference format"),
        ("foo:.x", "invalid reference format"),
        (":tag", "invalid reference format"),
        ("foo/", "invalid reference format"),
        ("foo//bar", "invalid reference format"),
        ("-foo", "invalid reference format"),
        ("foo@sha256:short", "invalid reference format"),
        (f"foo@sha256:{HEX64[:32]}", "invalid checksum digest length"),
        (f"foo@sha256:{HEX64.upper()}", "invalid checksum digest format"),
        (f"foo@md5:{HEX64[:32]}", "unsupported digest algorithm"),
        ("a" * 256, "repository name must not be more than 255 characters"),
    ],
)
def test_parse_ref_refuses_with_dockers_wording(text: str, message: str) -> None:
    with pytest.raises(RefError) as caught:
        parse_ref(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("text", "full"),
    [
        ("foo:tilt-build-1", "docker.io/library/foo:tilt-build-1"),
        ("  localhost:5000/foo:t\n", "localhost:5000/foo:t"),
        (f"gcr.io/a:t@{DIGEST}\n", f"gcr.io/a:t@{DIGEST}"),
    ],
)
def test_parse_tagged_ref(text: str, full: str) -> None:
    assert str(parse_tagged_ref(text)) == full


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("foo\n", "'foo' has no tag: expected a reference like name:tag"),
        (f"foo@{DIGEST}", f"'foo@{DIGEST}' has no tag: expected a reference like name:tag"),
        ("Foo:1", "invalid reference format: repository name (library/Foo) must be lowercase"),
        ("", "invalid reference format"),
        ("foo bar:1", "invalid reference format"),
    ],
)
def test_parse_tagged_ref_refuses(text: str, message: str) -> None:
    with pytest.raises(RefError) as caught:
        parse_tagged_ref(text)
    assert str(caught.value) == message


@pytest.mark.parametrize("tag", ["a", "_", "0", "v1.2.3", "A_b-c.D", "x" * 128, "a--b..c"])
def test_validate_tag_accepts(tag: str) -> None:
    assert validate_tag(tag) == tag


TAG_RULE = 'a tag is up to 128 letters, digits, "_", "." and "-", not starting with "." or "-"'


@pytest.mark.parametrize("tag", [".x", "-x", "x" * 129, "", "a b", "a:b", "a/b", "é", "x\n"])
def test_validate_tag_refuses(tag: str) -> None:
    with pytest.raises(RefError) as caught:
        validate_tag(tag)
    assert str(caught.value) == f'invalid tag "{tag}": {TAG_RULE}'


def test_with_tag_drops_digest_and_validates() -> None:
    ref = parse_ref(f"foo:old@{DIGEST}")
    assert str(ref.with_tag("new")) == "docker.io/library/foo:new"
    with pytest.raises(RefError, match="invalid tag"):
        ref.with_tag("-new")


@pytest.mark.parametrize(
    ("name", "escaped"),
    [
        ("foo", "foo"),
        ("gcr.io/foo/bar", "gcr.io_foo_bar"),
        ("localhost:5000/foo", "localhost_5000_foo"),
        (f"foo@{DIGEST}", f"foo_sha256_{HEX64}"),
    ],
)
def test_escape_name(name: str, escaped: str) -> None:
    assert escape_name(name) == escaped


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("base", "base"),
        ("docker.io/library/base", "base"),
        ("gcr.io/foo/bar", "gcr.io_foo_bar"),
        ("foo/bar", "foo_bar"),
        ("localhost:5000/foo", "localhost:5000_foo"),
        # Tilt names the ImageMap after FamiliarString, so a tag is part of the name.
        ("foo:dev", "foo:dev"),
        (f"foo@{DIGEST}", f"foo@{DIGEST}"),
    ],
)
def test_image_map_name(text: str, name: str) -> None:
    assert image_map_name(parse_ref(text)) == name


def test_image_map_name_too_long_ends_in_a_hash_like_tilt() -> None:
    # Tilt's TestSanitizeName: "abc123" * 50 -> first 244 characters + "-3c8e47c5".
    long = "abc123" * 50
    ref = Ref("docker.io", f"library/{long}")
    assert ref.familiar() == long
    assert image_map_name(ref) == long[:244] + "-3c8e47c5"


# (ref, registry, local name, cluster name or None when the same); the myreg.com and
# gcr.io/foo rows are Tilt's own registry_test.go cases.
REGISTRY_TABLE: list[tuple[str, Registry | None, str, str | None]] = [
    ("foo", None, "docker.io/library/foo", "docker.io/library/foo"),
    ("foo:1", None, "docker.io/library/foo", "docker.io/library/foo"),
    (f"gcr.io/a/b@{DIGEST}", None, "gcr.io/a/b", "gcr.io/a/b"),
    ("foo", Registry(""), "docker.io/library/foo", "docker.io/library/foo"),
    ("foo", LOCAL, "localhost:5000/foo", "localhost:5000/foo"),
    ("foo:1", LOCAL, "localhost:5000/foo", "localhost:5000/foo"),
    ("gcr.io/foo/bar", LOCAL, "localhost:5000/gcr.io_foo_bar", "localhost:5000/gcr.io_foo_bar"),
    ("a/b/c", LOCAL, "localhost:5000/a_b_c", "localhost:5000/a_b_c"),
    ("localhost:5000/foo", LOCAL, "localhost:5000/foo", "localhost:5000/foo"),
    ("localhost:5000/foo:1", LOCAL, "localhost:5000/foo", "localhost:5000/foo"),
    ("localhost:5001/foo", LOCAL, "localhost:5000/localhost_5001_foo", None),
    (f"foo@{DIGEST}", LOCAL, "localhost:5000/foo", "localhost:5000/foo"),
    ("myreg.com/bar", Registry("myreg.com:5000"), "myreg.com:5000/myreg.com_bar", None),
    ("myreg.com:5000/bar", Registry("myreg.com"), "myreg.com/myreg.com_5000_bar", None),
    ("docker.io/library/busybox", Registry("gcr.io/foo"), "gcr.io/foo/busybox", None),
    ("gcr.io/foo/bar", Registry("gcr.io/foo"), "gcr.io/foo/bar", None),
    ("foo", KIND, "localhost:5000/foo", "registry:5000/foo"),
    ("gcr.io/foo/bar", KIND, "localhost:5000/gcr.io_foo_bar", "registry:5000/gcr.io_foo_bar"),
    # Already under the local host: kept locally, but the cluster name still moves.
    ("localhost:5000/foo", KIND, "localhost:5000/foo", "registry:5000/localhost_5000_foo"),
    ("registry:5000/foo", KIND, "localhost:5000/registry_5000_foo", "registry:5000/foo"),
    ("foo/bar", ECR, "localhost:5000/app", "localhost:5000/app"),
    ("gcr.io/x/y:1", ECR, "localhost:5000/app", "localhost:5000/app"),
    ("localhost:5000/foo", ECR, "localhost:5000/foo", "localhost:5000/foo"),
]


@pytest.mark.parametrize(("text", "registry", "local", "cluster"), REGISTRY_TABLE)
def test_registry_rewriting(
    text: str, registry: Registry | None, local: str, cluster: str | None
) -> None:
    ref = parse_ref(text)
    assert str(local_name(ref, registry)) == local
    assert str(cluster_name(ref, registry)) == (cluster or local)


@pytest.mark.parametrize(
    ("text", "registry", "message"),
    [
        (
            "foo",
            Registry("myregistry"),
            "Error parsing myregistry/foo after applying default registry myregistry:"
            ' repository name must be canonical (a registry host needs a "." or a ":port",'
            ' or is "localhost")',
        ),
        (
            "foo",
            Registry("localhost:5000", single_name="App"),
            "Error parsing localhost:5000/App after applying default registry localhost:5000:"
            " invalid reference format: repository name (App) must be lowercase",
        ),
        (
            "[::1]:5000/foo",
            LOCAL,
            "Error parsing localhost:5000/[__1]_5000_foo after applying default registry"
            " localhost:5000: invalid reference format",
        ),
        # Tilt's reference_test.go: 230 characters fit alone, not under a long registry.
        (
            "o" * 230,
            Registry("gcr.io/somewhat/long/hostname"),
            f"Error parsing gcr.io/somewhat/long/hostname/{'o' * 230} after applying default"
            " registry gcr.io/somewhat/long/hostname: repository name must not be more than"
            " 255 characters (it is 260)",
        ),
        (
            "o" * 230,
            Registry("gcr.io", host_from_cluster="gcr.io/somewhat/long/hostname"),
            f"Error parsing gcr.io/somewhat/long/hostname/{'o' * 230} after applying default"
            " registry gcr.io/somewhat/long/hostname: repository name must not be more than"
            " 255 characters (it is 260)",
        ),
    ],
)
def test_registry_rewriting_refuses(text: str, registry: Registry, message: str) -> None:
    with pytest.raises(RefError) as caught:
        validate_ref_set(parse_ref(text), registry)
    assert str(caught.value) == message


@pytest.mark.parametrize("host", ["localhost:5000", "gcr.io/foo", "registry:5000", "[::1]:5000"])
def test_registry_host_valid_as_tilt_validates_it(host: str) -> None:
    validate_registry_host(host)


@pytest.mark.parametrize(
    ("host", "message"),
    [  # Tilt's RegistryHosting.Validate: "<host>/fake" must parse as a canonical name
        ("invalid", "repository name must be canonical"),
        ("foo/bar/baz", "repository name must be canonical"),
        ("localhost:5000/Team", "invalid reference format: repository name (Team/fake) must be"),
        ("localhost:5000/", "invalid reference format"),
        ("http://localhost:5000", "invalid reference format"),
    ],
)
def test_registry_host_refused_as_tilt_refuses_it(host: str, message: str) -> None:
    with pytest.raises(RefError) as caught:
        validate_registry_host(host)
    assert str(caught.value).startswith(message)


GCR = Registry("gcr.io/my-project", host_from_cluster="mirror.local/my-project")


@pytest.mark.parametrize(
    ("written", "registry", "cluster", "under"),
    [
        ("localhost:5000/app:v1", KIND, "registry:5000/app:v1", True),
        ("localhost:5000/app:v1", LOCAL, "localhost:5000/app:v1", True),
        # a host with a path (GCR, ECR-style): compared by name, not by domain
        ("gcr.io/my-project/app:v1", GCR, "mirror.local/my-project/app:v1", True),
        ("gcr.io/other-project/app:v1", GCR, "gcr.io/other-project/app:v1", False),
        ("us.gcr.io/my-project/app:v1", GCR, "us.gcr.io/my-project/app:v1", False),
        ("gcr.io/my-project-2/app:v1", GCR, "gcr.io/my-project-2/app:v1", False),
        ("app:v1", KIND, "docker.io/library/app:v1", False),
        (f"localhost:5000/app:v1@{DIGEST}", KIND, f"registry:5000/app:v1@{DIGEST}", True),
    ],
)
def test_a_ref_a_script_wrote_is_pushed_and_pulled_only_under_the_registry(
    written: str, registry: Registry, cluster: str, under: bool
) -> None:
    ref = parse_ref(written)
    assert str(in_cluster(ref, registry)) == cluster
    assert under_registry(ref, registry) is under


@pytest.mark.parametrize(
    ("text", "registry", "suffix", "tag"),
    [
        ("foo", None, "tilt-build-1", "tilt-build-1"),
        ("foo", LOCAL, "tilt-build-1", "tilt-build-1"),
        ("foo/bar", ECR, "tilt-build-1", "bar-tilt-build-1"),
        ("gcr.io/a/b:t", ECR, "tilt-0123456789abcdef", "b-tilt-0123456789abcdef"),
        ("foo", ECR, "x", "foo-x"),
        ("foo", Registry("", single_name="app"), "x", "foo-x"),
    ],
)
def test_build_tag(text: str, registry: Registry | None, suffix: str, tag: str) -> None:
    assert build_tag(parse_ref(text), registry, suffix) == tag


def test_build_tag_refuses_a_tag_docker_would_refuse() -> None:
    with pytest.raises(RefError, match=r'^invalid tag "\.x"'):
        build_tag(parse_ref("foo"), LOCAL, ".x")
    with pytest.raises(RefError, match=r'^invalid tag "foo-a b"'):
        build_tag(parse_ref("foo"), ECR, "a b")
    with pytest.raises(RefError, match="invalid tag"):
        build_tag(parse_ref("a" * 100), ECR, "tilt-build-1700000000" + "x" * 10)


def test_build_time_tag() -> None:
    assert build_time_tag(1700000000) == "tilt-build-1700000000"


@pytest.mark.parametrize(
    ("image_id", "tag"),
    [
        (DIGEST, "tilt-0123456789abcdef"),
        (f"sha256:{HEX64[::-1]}", "tilt-fedcba9876543210"),
        (HEX64, "tilt-0123456789abcdef"),
    ],
)
def test_content_tag(image_id: str, tag: str) -> None:
    assert content_tag(image_id) == tag


@pytest.mark.parametrize("image_id", ["", "sha256:", "sha256:0123", f"sha256:{HEX64.upper()}"])
def test_content_tag_refuses(image_id: str) -> None:
    with pytest.raises(RefError) as caught:
        content_tag(image_id)
    assert str(caught.value) == f"image id {image_id!r} is not a digest like sha256:<64 hex digits>"


@pytest.mark.parametrize(
    ("text", "registry", "path"),
    [
        ("foo", None, "library/foo"),
        ("foo/bar:1", None, "foo/bar"),
        ("gcr.io/a/b", None, "a/b"),
        ("foo", LOCAL, "foo"),
        ("gcr.io/foo/bar", LOCAL, "gcr.io_foo_bar"),
        ("foo/bar", ECR, "app"),
    ],
)
def test_expected_image_path(text: str, registry: Registry | None, path: str) -> None:
    assert expected_image_path(local_name(parse_ref(text), registry)) == path


def test_dotted_hub_namespace_is_ambiguous_as_in_docker() -> None:
    # Docker Hub namespaces cannot contain ".", so docker reads the familiar form as a domain.
    ref = parse_ref("docker.io/foo.bar/baz")
    assert ref.familiar() == "foo.bar/baz"
    assert parse_ref(ref.familiar()).domain == "foo.bar"


COMPONENT = st.from_regex(r"[a-z0-9]{1,6}(?:(?:[._]|__|-{1,2})[a-z0-9]{1,6}){0,2}", fullmatch=True)
DOMAIN = st.one_of(
    st.just(""),
    st.sampled_from(["docker.io/", "index.docker.io/", "localhost/", "localhost:5000/"]),
    st.from_regex(r"[a-z0-9]{1,6}(?:\.[a-z0-9]{1,6}){1,2}(?::[0-9]{1,5})?/", fullmatch=True),
)
TAG = st.one_of(st.just(""), st.from_regex(r":[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True))
DIGEST_PART = st.one_of(
    st.just(""), st.text("0123456789abcdef", min_size=64, max_size=64).map(lambda h: f"@sha256:{h}")
)


def _looks_like_domain(components: list[str]) -> bool:
    first = components[0]
    return len(components) > 1 and ("." in first or first == "localhost")


@given(DOMAIN, st.lists(COMPONENT, min_size=1, max_size=4), TAG, DIGEST_PART)
def test_round_trip(domain: str, components: list[str], tag: str, digest: str) -> None:
    # Without a domain (or under Docker Hub) a dotted first part reads as a registry domain.
    assume(
        not (domain in ("", "docker.io/", "index.docker.io/") and _looks_like_domain(components))
    )
    ref = parse_ref(domain + "/".join(components) + tag + digest)
    assert parse_ref(str(ref)) == ref
    assert parse_ref(ref.familiar()) == ref


@given(st.text("abAB09_.-:/@ \nsha256", max_size=40))
def test_parse_ref_only_raises_ref_error(text: str) -> None:
    try:
        ref = parse_ref(text)
    except RefError:
        return
    assert parse_ref(str(ref)) == ref


# Go's distribution/reference tables (normalize_test.go: TestValidateReferenceName,
# TestValidateRemoteName, TestParseRepositoryInfo; reference_test.go: TestReferenceParse),
# run through ParseNormalizedNamed as docker and Tilt do: (input, String(), FamiliarString()).
GO_VALID = [
    ("docker/docker", "docker.io/docker/docker", "docker/docker"),
    ("library/debian", "docker.io/library/debian", "debian"),
    ("debian", "docker.io/library/debian", "debian"),
    ("docker.io/debian", "docker.io/library/debian", "debian"),
    ("index.docker.io/docker/docker", "docker.io/docker/docker", "docker/docker"),
    ("index.docker.io/library/debian", "docker.io/library/debian", "debian"),
    ("127.0.0.1:5000/docker/docker", "127.0.0.1:5000/docker/docker", None),
    ("127.0.0.1:5000/library/debian", "127.0.0.1:5000/library/debian", None),
    ("192.168.0.1", "docker.io/library/192.168.0.1", "192.168.0.1"),
    ("192.168.0.1:80", "docker.io/library/192.168.0.1:80", "192.168.0.1:80"),
    ("192.168.0.1:8/debian", "192.168.0.1:8/debian", None),
    ("[fc00::1]:5000/docker", "[fc00::1]:5000/docker", None),
    ("[fc00:1:2:3:4:5:6:7]:5000/library/debian", "[fc00:1:2:3:4:5:6:7]:5000/library/debian", None),
    (f"docker.io/{HEX64}", f"docker.io/library/{HEX64}", HEX64),
    ("Docker/docker", "Docker/docker", None),  # an upper-case first part is a domain
    ("DOCKER/docker", "DOCKER/docker", None),
    ("docker---rules/docker", "docker.io/docker---rules/docker", "docker---rules/docker"),
    ("d/docker", "docker.io/d/docker", "d/docker"),
    ("jess/t", "docker.io/jess/t", "jess/t"),
    ("dock__er/docker", "docker.io/dock__er/docker", "dock__er/docker"),
    ("test_com", "docker.io/library/test_com", "test_com"),
    ("test.com:tag", "docker.io/library/test.com:tag", "test.com:tag"),
    ("test.com:5000", "docker.io/library/test.com:5000", "test.com:5000"),
    ("test:5000/repo:tag", "test:5000/repo:tag", None),
    ("b.gcr.io/test.example.com/my-app:test.example.com", None, None),
    ("xn--n3h.com/myimage:xn--n3h.com", None, None),
    ("foo_bar.com:8080", "docker.io/library/foo_bar.com:8080", "foo_bar.com:8080"),
    ("foo/foo_bar.com:8080", "docker.io/foo/foo_bar.com:8080", "foo/foo_bar.com:8080"),
    ("lowercase:Uppercase", "docker.io/library/lowercase:Uppercase", "lowercase:Uppercase"),
    ("ubuntu-12.04-base", "docker.io/library/ubuntu-12.04-base", "ubuntu-12.04-base"),
    ("library/foo/bar", "docker.io/library/foo/bar", "library/foo/bar"),
    (
        "a/" * 127 + "a:tag-puts-this-over-max",
        "docker.io/" + "a/" * 127 + "a:tag-puts-this-over-max",
        None,
    ),
    # AWS documents ECR hosts with an underscore, which no host name may hold: Go reads the
    # whole name as a path with no domain, and accepts it.
    ("aws_account_id.dkr.ecr.region.amazonaws.com/my-repo", None, None),
]


@pytest.mark.parametrize(("text", "full", "familiar"), GO_VALID)
def test_parse_ref_accepts_what_go_accepts(text: str, full: str | None, familiar: str) -> None:
    ref = parse_ref(text)
    assert str(ref) == (full or text)
    assert ref.familiar() == (familiar or text)
    assert parse_ref(str(ref)) == ref


def test_a_name_with_no_valid_host_has_no_domain_as_in_go() -> None:
    ref = parse_ref("aws_account_id.dkr.ecr.region.amazonaws.com/my-repo")
    assert (ref.domain, ref.path) == ("", "aws_account_id.dkr.ecr.region.amazonaws.com/my-repo")
    assert image_map_name(ref) == "aws_account_id.dkr.ecr.region.amazonaws.com_my-repo"
    ecr = Registry("aws_account_id.dkr.ecr.region.amazonaws.com", single_name="dev")
    validate_registry_host(ecr.host)
    assert str(local_name(parse_ref("app"), ecr)) == ecr.host + "/dev"


LOWER = "invalid reference format: repository name ({}) must be lowercase"
GO_INVALID = [
    ("https://github.com/docker/docker", "invalid reference format"),
    ("docker/Docker", LOWER.format("docker/Docker")),
    ("docker.io/docker/Docker", LOWER.format("docker/Docker")),
    ("Uppercase:tag", LOWER.format("library/Uppercase")),
    ("test:5000/Uppercase/lowercase:tag", LOWER.format("Uppercase/lowercase")),
    ("-docker", "invalid reference format"),
    ("-docker/docker", "invalid reference format"),
    ("-docker.io/docker/docker", "invalid reference format"),
    ("docker-/docker", "invalid reference format"),
    ("-docker-/docker", "invalid reference format"),
    ("docker///docker", "invalid reference format"),
    ("docker.io/docker///docker", "invalid reference format"),
    ("[fc00::1]", "invalid reference format"),
    ("[fc00::1]:5000", "invalid reference format"),
    ("fc00::1:5000/debian", "invalid reference format"),
    ("[fe80::1%eth0]:5000/debian", "invalid reference format"),
    ("[2001:db8:3:4::192.0.2.33]:5000/debian", "invalid reference format"),
    (HEX64, f"invalid repository name ({HEX64}), cannot specify 64-byte hexadecimal strings"),
    ("____/____", "invalid reference format"),
    ("_docker/_docker", "invalid reference format"),
    ("dock..er/docker", "invalid reference format"),
    ("dock_.er/docker", "invalid reference format"),
    ("dock-.er/docker", "invalid reference format"),
    ("docker/", "invalid reference format"),
    (":justtag", "invalid reference format"),
    (f"@sha256:{'f' * 64}", "invalid reference format"),
    (f"repo@sha256:{'f' * 34}", "invalid checksum digest length"),
    (f"validname@invaliddigest:{'f' * 64}", "unsupported digest algorithm"),
    ("aa/asdf$$^/aa", "invalid reference format"),
    ("a/" * 128 + "a:tag", "repository name must not be more than 255 characters"),
    (
        "x" * 64 + "_is_not_a_valid_namespace/" + "y" * 192,
        "repository name must not be more than 255 characters",
    ),
]


@pytest.mark.parametrize(("text", "message"), GO_INVALID)
def test_parse_ref_refuses_what_go_refuses(text: str, message: str) -> None:
    with pytest.raises(RefError) as caught:
        parse_ref(text)
    assert str(caught.value) == message
