//! KubeVirt manifests for an appliance: a `VirtualMachine` that boots the
//! containerDisk (see [`crate::oci`]) by UEFI, and a `Service` for its ports.
//!
//! The YAML is written by hand, so its layout is fixed and commented; any
//! value that YAML could read as something other than a string (`1.0`,
//! `true`, `y`) or that holds special characters is double-quoted.

use std::fmt::Write as _;
use std::path::Path;

use nodeos_manifest::Manifest;
use nodeos_manifest::host::{DEFAULT_CPUS, DEFAULT_MEMORY_MIB};

use crate::{ExportError, io_error};

/// The manifests' file name in the export directory.
pub const MANIFESTS: &str = "vm.yaml";
/// The disk's name inside the containerDisk.
pub const DISK_NAME: &str = "disk.qcow2";

/// The name used when the appliance's name has no letter or digit.
const FALLBACK_NAME: &str = "nodeos-app";
/// Longest DNS-1123 label, and longest label value.
const MAX_LABEL: usize = 63;

/// What the manifests describe.
#[derive(Debug, Clone, Copy)]
pub struct VmSpec<'a> {
    /// The appliance's name (its package name); made a DNS label by [`dns_label`].
    pub name: &'a str,
    /// The containerDisk's image reference, e.g. `registry.example/hello:1.0.0`.
    pub image: &'a str,
    pub memory_mib: u64,
    pub cpus: u32,
    /// Guest TCP ports the app listens on. Port 0 and repeats are left out.
    pub ports: &'a [u16],
    /// The app's version, for the `app.kubernetes.io/version` label.
    pub version: &'a str,
}

/// The manifests as one YAML text: a header comment, the `VirtualMachine`
/// and, when there are ports, a `Service` of type ClusterIP for them.
///
/// The header's push command names the archive `<dns_label(name)>.oci.tar`
/// tagged [`image_tag`]`(image)` and the manifests `vm.yaml`: write them
/// under those names.
pub fn manifests(spec: &VmSpec) -> String {
    let name = dns_label(spec.name);
    let ports = ports(spec.ports);
    let mut y = String::new();
    header(&mut y, spec, &name, !ports.is_empty());
    virtual_machine(&mut y, spec, &name, &ports);
    if !ports.is_empty() {
        y.push_str("---\n");
        service(&mut y, spec, &name, &ports);
    }
    y
}

/// Writes the directory `out` (new): the containerDisk archive of the
/// qcow2 disk `qcow2` (`<name>.oci.tar`) and [`MANIFESTS`]. `image` is the
/// reference the archive is to be pushed as; without one it is
/// `<name>:<version>`, which the user pushes to their registry.
pub fn write_dir(
    manifest: &Manifest,
    qcow2: &Path,
    out: &Path,
    image: Option<&str>,
) -> Result<(), ExportError> {
    std::fs::create_dir(out).map_err(io_error(format!("cannot create `{}`", out.display())))?;
    let name = dns_label(&manifest.name);
    let default_image = format!("{name}:{}", label_safe_tag(&manifest.version));
    let image = image.unwrap_or(&default_image);
    crate::oci::write_container_disk(
        qcow2,
        DISK_NAME,
        image_tag(image),
        &out.join(format!("{name}.oci.tar")),
    )?;
    let ports: Vec<u16> = manifest.vm.ports.iter().map(|p| p.guest_port).collect();
    let spec = VmSpec {
        name: &manifest.name,
        image,
        memory_mib: manifest.vm.memory.unwrap_or(DEFAULT_MEMORY_MIB).into(),
        cpus: manifest.vm.cpus.unwrap_or(DEFAULT_CPUS),
        ports: &ports,
        version: &manifest.version,
    };
    let path = out.join(MANIFESTS);
    std::fs::write(&path, manifests(&spec))
        .map_err(io_error(format!("cannot write `{}`", path.display())))
}

/// A version as an image tag: `[A-Za-z0-9_.-]`, others become `_`.
fn label_safe_tag(version: &str) -> String {
    let tag: String = version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(128)
        .collect();
    if tag.is_empty() || tag.starts_with(['.', '-']) {
        format!("v{tag}")
    } else {
        tag
    }
}

/// `name` as a DNS-1035 label, valid for both a `VirtualMachine` and a
/// `Service`: lower case, runs of other characters (`@`, `/`, `.`, `_`, …)
/// turned into one `-`, at most 63 characters, starting with a letter
/// (`nodeos-` is put before a leading digit) and ending with a letter or
/// digit. A name with no letter or digit becomes `nodeos-app`.
pub fn dns_label(name: &str) -> String {
    let mut label = String::new();
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            label.push(c);
        } else if !label.is_empty() && !label.ends_with('-') {
            label.push('-');
        }
    }
    if label.starts_with(|c: char| c.is_ascii_digit()) {
        label.insert_str(0, "nodeos-");
    }
    label.truncate(MAX_LABEL);
    let label = label.trim_end_matches('-');
    if label.is_empty() {
        FALLBACK_NAME.to_owned()
    } else {
        label.to_owned()
    }
}

/// The tag of an image reference: `1.0.0` in `registry.example/hello:1.0.0`,
/// `latest` when it has none.
pub fn image_tag(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or_default();
    let last = without_digest.rsplit('/').next().unwrap_or_default();
    match last.split_once(':') {
        Some((_, tag)) if !tag.is_empty() => tag,
        _ => "latest",
    }
}

fn header(y: &mut String, spec: &VmSpec, name: &str, has_ports: bool) {
    let image = comment_text(spec.image);
    let tag = comment_text(image_tag(spec.image));
    let _ = write!(
        y,
        "\
# KubeVirt manifests for {name}, generated by `nodeos export --format kubevirt`.
#
# Push the containerDisk archive exported with this file, then create the VM:
#   skopeo copy oci-archive:{name}.oci.tar:{tag} docker://{image}
#   kubectl apply -f vm.yaml
#
# The VM boots its disk by UEFI with Secure Boot off. A containerDisk is
# ephemeral: the disk starts afresh whenever the VM's pod is recreated, so
# nothing written to /data survives that. To update, push a new image and
# restart the VM.
"
    );
    if !has_ports {
        y.push_str(
            "\
#
# The app declares no ports, so there is no Service and the interface lists
# no ports (masquerade then forwards all of them to the VM).
",
        );
    }
}

fn virtual_machine(y: &mut String, spec: &VmSpec, name: &str, ports: &[u16]) {
    y.push_str(
        "\
apiVersion: kubevirt.io/v1
kind: VirtualMachine
",
    );
    metadata(y, spec, name);
    let _ = write!(
        y,
        "\
spec:
  runStrategy: Always
  template:
    metadata:
      labels:
        kubevirt.io/vm: {name}
        app.kubernetes.io/name: {name}
    spec:
      domain:
        cpu:
          cores: {cpus}
        resources:
          requests:
            memory: {memory}Mi
        firmware:
          bootloader:
            efi:
              secureBoot: false
        devices:
          disks:
            - name: system
              disk:
                bus: virtio
          interfaces:
            - name: default
              masquerade: {{}}
",
        name = scalar(name),
        cpus = spec.cpus,
        memory = spec.memory_mib,
    );
    if !ports.is_empty() {
        y.push_str("              ports:\n");
        for port in ports {
            let _ = write!(
                y,
                "                - name: p{port}\n                  port: {port}\n                  protocol: TCP\n"
            );
        }
    }
    let _ = write!(
        y,
        "      networks:
        - name: default
          pod: {{}}
      terminationGracePeriodSeconds: 30
      volumes:
        - name: system
          containerDisk:
            image: {image}
",
        image = scalar(spec.image),
    );
}

fn service(y: &mut String, spec: &VmSpec, name: &str, ports: &[u16]) {
    y.push_str(
        "\
apiVersion: v1
kind: Service
",
    );
    metadata(y, spec, name);
    let _ = write!(
        y,
        "\
spec:
  type: ClusterIP
  selector:
    kubevirt.io/vm: {name}
  ports:
",
        name = scalar(name),
    );
    for port in ports {
        let _ = write!(
            y,
            "    - name: p{port}\n      port: {port}\n      targetPort: {port}\n      protocol: TCP\n"
        );
    }
}

fn metadata(y: &mut String, spec: &VmSpec, name: &str) {
    let _ = write!(
        y,
        "\
metadata:
  name: {name}
  labels:
    app.kubernetes.io/name: {name}
    app.kubernetes.io/version: {version}
    app.kubernetes.io/managed-by: nodeos
",
        name = scalar(name),
        version = scalar(&label_value(spec.version)),
    );
}

/// The ports in the order given, without 0 and repeats.
fn ports(ports: &[u16]) -> Vec<u16> {
    let mut kept = Vec::new();
    for &port in ports {
        if port != 0 && !kept.contains(&port) {
            kept.push(port);
        }
    }
    kept
}

/// `value` as a Kubernetes label value: at most 63 of `[A-Za-z0-9_.-]`,
/// starting and ending with a letter or digit. Other characters (the `+` of
/// semver build metadata) become `_`.
fn label_value(value: &str) -> String {
    let mapped: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let mut value = trimmed.to_owned();
    value.truncate(MAX_LABEL);
    value
        .trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

/// `s` for a comment: line breaks and other control characters become `?`.
fn comment_text(s: &str) -> String {
    s.chars()
        .map(|c| if is_special(c) { '?' } else { c })
        .collect()
}

/// A character that YAML needs escaped in a string (or reads as a line break).
fn is_special(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}')
}

/// `s` as a YAML scalar that reads back as the string `s`: plain when that
/// is unambiguous, double-quoted and escaped otherwise.
fn scalar(s: &str) -> String {
    let plain = s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@' | '+'))
        && !s.ends_with(':')
        // YAML 1.1 (which Kubernetes' parser follows) reads these as booleans or null.
        && !["y", "n", "yes", "no", "on", "off", "true", "false", "null"]
            .iter()
            .any(|word| s.eq_ignore_ascii_case(word));
    if plain {
        return s.to_owned();
    }
    let mut quoted = String::with_capacity(s.len() + 2);
    quoted.push('"');
    for c in s.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            c if is_special(c) => {
                let _ = write!(quoted, "\\u{:04x}", u32::from(c));
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(ports: &'a [u16]) -> VmSpec<'a> {
        VmSpec {
            name: "@acme/Hello.World",
            image: "registry.example/acme/hello:1.2.3",
            memory_mib: 512,
            cpus: 2,
            ports,
            version: "1.2.3",
        }
    }

    #[test]
    fn names_become_dns_labels() {
        let cases = [
            ("hello", "hello"),
            ("@acme/Hello.World", "acme-hello-world"),
            ("my__app..v2", "my-app-v2"),
            ("-lead-and-trail-", "lead-and-trail"),
            ("café-au-lait", "caf-au-lait"),
            ("3d-viewer", "nodeos-3d-viewer"),
            ("", "nodeos-app"),
            ("@/._", "nodeos-app"),
            ("ÄÖÜ", "nodeos-app"),
        ];
        for (name, label) in cases {
            assert_eq!(dns_label(name), label, "{name:?}");
        }
        let long = dns_label(&format!("{}-{}", "a".repeat(62), "b".repeat(10)));
        assert_eq!(long, "a".repeat(62), "a `-` cut at 63 is dropped");
        for name in ["x".repeat(200), "9".repeat(100), "@scope/".repeat(30)] {
            let label = dns_label(&name);
            assert!(label.len() <= 63, "{label}");
            assert!(
                label.starts_with(|c: char| c.is_ascii_lowercase()),
                "{label}"
            );
            assert!(
                label.ends_with(|c: char| c.is_ascii_alphanumeric()),
                "{label}"
            );
            assert!(
                label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            );
        }
    }

    #[test]
    fn image_tags() {
        assert_eq!(image_tag("registry.example/hello:1.0.0"), "1.0.0");
        assert_eq!(image_tag("registry.example:5000/hello"), "latest");
        assert_eq!(image_tag("registry.example:5000/hello:v2"), "v2");
        assert_eq!(image_tag("hello@sha256:abcd"), "latest");
        assert_eq!(image_tag("hello:1@sha256:abcd"), "1");
        assert_eq!(image_tag("hello:"), "latest");
    }

    #[test]
    fn scalars_that_yaml_could_misread_are_quoted() {
        assert_eq!(scalar("hello"), "hello");
        assert_eq!(
            scalar("registry.example/hello:1.0.0"),
            "registry.example/hello:1.0.0"
        );
        assert_eq!(scalar("1.0"), r#""1.0""#);
        assert_eq!(scalar("1.0.0"), r#""1.0.0""#);
        assert_eq!(scalar("true"), r#""true""#);
        assert_eq!(scalar("Y"), r#""Y""#);
        assert_eq!(scalar("off"), r#""off""#);
        assert_eq!(scalar("Null"), r#""Null""#);
        assert_eq!(scalar(""), r#""""#);
        assert_eq!(scalar("a: b"), r#""a: b""#);
        assert_eq!(scalar("x #y"), r#""x #y""#);
        assert_eq!(scalar("tag:"), r#""tag:""#);
        assert_eq!(scalar("say \"hi\"\\\n\u{7}"), r#""say \"hi\"\\\n\u0007""#);
    }

    #[test]
    fn version_labels_are_valid_label_values() {
        assert_eq!(label_value("1.2.3"), "1.2.3");
        assert_eq!(label_value("1.0.0-rc.1+build.5"), "1.0.0-rc.1_build.5");
        assert_eq!(label_value("+1+"), "1");
        assert_eq!(label_value(""), "");
        assert_eq!(label_value(&"1.".repeat(40)).len(), 63);
        assert!(label_value(&"1.".repeat(40)).ends_with('1'));
    }

    #[test]
    fn manifests_with_ports() {
        let expected = r#"# KubeVirt manifests for acme-hello-world, generated by `nodeos export --format kubevirt`.
#
# Push the containerDisk archive exported with this file, then create the VM:
#   skopeo copy oci-archive:acme-hello-world.oci.tar:1.2.3 docker://registry.example/acme/hello:1.2.3
#   kubectl apply -f vm.yaml
#
# The VM boots its disk by UEFI with Secure Boot off. A containerDisk is
# ephemeral: the disk starts afresh whenever the VM's pod is recreated, so
# nothing written to /data survives that. To update, push a new image and
# restart the VM.
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: acme-hello-world
  labels:
    app.kubernetes.io/name: acme-hello-world
    app.kubernetes.io/version: "1.2.3"
    app.kubernetes.io/managed-by: nodeos
spec:
  runStrategy: Always
  template:
    metadata:
      labels:
        kubevirt.io/vm: acme-hello-world
        app.kubernetes.io/name: acme-hello-world
    spec:
      domain:
        cpu:
          cores: 2
        resources:
          requests:
            memory: 512Mi
        firmware:
          bootloader:
            efi:
              secureBoot: false
        devices:
          disks:
            - name: system
              disk:
                bus: virtio
          interfaces:
            - name: default
              masquerade: {}
              ports:
                - name: p3000
                  port: 3000
                  protocol: TCP
                - name: p443
                  port: 443
                  protocol: TCP
      networks:
        - name: default
          pod: {}
      terminationGracePeriodSeconds: 30
      volumes:
        - name: system
          containerDisk:
            image: registry.example/acme/hello:1.2.3
---
apiVersion: v1
kind: Service
metadata:
  name: acme-hello-world
  labels:
    app.kubernetes.io/name: acme-hello-world
    app.kubernetes.io/version: "1.2.3"
    app.kubernetes.io/managed-by: nodeos
spec:
  type: ClusterIP
  selector:
    kubevirt.io/vm: acme-hello-world
  ports:
    - name: p3000
      port: 3000
      targetPort: 3000
      protocol: TCP
    - name: p443
      port: 443
      targetPort: 443
      protocol: TCP
"#;
        assert_eq!(manifests(&spec(&[3000, 443, 0, 3000])), expected);
    }

    #[test]
    fn without_ports_there_is_no_service() {
        let yaml = manifests(&spec(&[]));
        assert!(!yaml.contains("kind: Service"), "{yaml}");
        assert!(!yaml.contains("---"), "{yaml}");
        assert!(!yaml.contains("ports:"), "{yaml}");
        assert!(
            yaml.contains("# The app declares no ports, so there is no Service"),
            "{yaml}"
        );
        assert!(
            yaml.contains("              masquerade: {}\n      networks:\n"),
            "{yaml}"
        );
        assert_eq!(yaml, manifests(&spec(&[0])));
    }

    #[test]
    fn a_line_break_in_the_image_stays_in_its_string() {
        let spec = VmSpec {
            image: "registry.example/x:1\nkind: Secret",
            ..spec(&[])
        };
        let yaml = manifests(&spec);
        assert!(
            yaml.contains("docker://registry.example/x:1?kind: Secret\n"),
            "{yaml}"
        );
        assert!(
            yaml.contains("image: \"registry.example/x:1\\nkind: Secret\"\n"),
            "{yaml}"
        );
        assert!(
            !yaml.lines().any(|line| line.starts_with("kind: Secret")),
            "{yaml}"
        );
    }

    #[test]
    fn values_appear_where_kubevirt_reads_them() {
        let spec = VmSpec {
            name: "true",
            image: "registry.example/odd name:1",
            memory_mib: 2048,
            cpus: 4,
            ports: &[8080],
            version: "2.0",
        };
        let yaml = manifests(&spec);
        assert!(
            yaml.contains("docker://registry.example/odd name:1\n"),
            "{yaml}"
        );
        for line in [
            "\n  name: \"true\"\n",
            "\n        kubevirt.io/vm: \"true\"\n",
            "\n    kubevirt.io/vm: \"true\"\n",
            "\n    app.kubernetes.io/version: \"2.0\"\n",
            "\n          cores: 4\n",
            "\n            memory: 2048Mi\n",
            "\n            image: \"registry.example/odd name:1\"\n",
            "\n                - name: p8080\n                  port: 8080\n",
            "\n      port: 8080\n      targetPort: 8080\n",
        ] {
            assert!(yaml.contains(line), "{line:?} missing from:\n{yaml}");
        }
        // Every line is a comment, `---`, or indented by a multiple of two
        // spaces with no tabs, as the hand-written layout intends.
        for line in yaml.lines() {
            let indent = line.len() - line.trim_start_matches(' ').len();
            assert!(indent % 2 == 0 && !line.contains('\t'), "{line:?}");
        }
    }
}
