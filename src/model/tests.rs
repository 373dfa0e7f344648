use super::*;
use std::time::Duration;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/data/deployments/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

/// A minimal valid newer-form document with `extra` spliced into the component's
/// properties and `params` appended as `spec.parameters`.
fn doc_with(id: &str, components: &str, params: &str) -> String {
    format!(
        "apiVersion: application.margo.org/v1\n\
         kind: ApplicationDeployment\n\
         metadata:\n  name: test\n  annotations:\n    id: {id}\n\
         spec:\n  applicationId: com-example-test\n  deploymentProfile:\n    type: compose\n\
         \x20   components:\n{components}{params}"
    )
}

fn oci_component(name: &str) -> String {
    format!(
        "      - name: {name}\n        properties:\n          repository: oci://r.example.com/a/{name}\n          revision: 1.0.0\n"
    )
}

fn invalid_reason(e: &ModelError) -> (&str, &str) {
    match e {
        ModelError::Invalid { field, reason, .. } => (field, reason),
        other => panic!("expected Invalid, got {other}"),
    }
}

#[test]
fn parses_older_form_with_ids_in_annotations() {
    // Fixture: PoC-style document, packageLocation + keyLocation, docker-compose profile.
    let ds = parse_documents(&fixture("valid-older-form.yaml")).unwrap();
    assert_eq!(ds.len(), 1);
    let d = &ds[0];
    assert_eq!(d.id, "a3e2f5dc-912e-494f-8395-52cf3769bc06");
    assert_eq!(d.application_id, "com-northstartida-digitron-orchestrator");
    assert_eq!(d.name.as_deref(), Some("digitron-orchestrator-deployment"));
    assert_eq!(d.namespace.as_deref(), Some("margo"));
    assert_eq!(d.profile, ProfileType::DockerCompose);
    let c = &d.components[0];
    assert_eq!(c.name, "digitron-orchestrator");
    assert!(c.wait);
    assert_eq!(c.timeout, Some(Duration::from_secs(330)));
    let PackageSource::Url { location, key } = &c.source else {
        panic!("expected a URL source, got {:?}", c.source);
    };
    assert!(
        location
            .as_str()
            .starts_with("https://registry.example.com/v2/")
    );
    assert!(!location.is_plain_http());
    assert!(key.is_some());
}

#[test]
fn stringifies_parameter_values_as_written() {
    // Fixture: parameters holding a string, an integer, `1.10` (must not become 1.1) and a
    // bool; `ratio` has no components list, so it reaches every component.
    let ds = parse_documents(&fixture("valid-older-form.yaml")).unwrap();
    let env = ds[0].env_for_component("digitron-orchestrator");
    let want: BTreeMap<String, String> = [
        ("IDP_NAME", "Keycloak"),
        ("POLL_FREQUENCY", "30"),
        ("RATIO", "1.10"),
        ("DEBUG", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(env, want);
}

#[test]
fn parses_newer_form_with_oci_packages() {
    // Fixture: SUP-01 document, spec.applicationId, metadata.deviceId, two OCI components.
    let ds = parse_documents(&fixture("valid-newer-form.yaml")).unwrap();
    let d = &ds[0];
    assert_eq!(d.id, "7b1c0e5a-1f2d-4c3b-9a8e-6d5f4e3c2b1a");
    assert_eq!(d.application_id, "com-northstartida-digitron-orchestrator");
    assert_eq!(d.device_id.as_deref(), Some("northstar-edge-0042"));
    assert_eq!(d.profile, ProfileType::Compose);
    assert_eq!(d.components.len(), 2);
    let orch = d.component("digitron-orchestrator").unwrap();
    let r = orch.source.oci_reference().unwrap();
    assert_eq!(r.registry, "registry.example.com");
    assert_eq!(r.repository, "apps/digitron");
    // SUP-01: '+' of SemVer build metadata is stored as '_' in the tag.
    assert_eq!(r.tag.as_deref(), Some("1.2.3_build.7"));
    assert_eq!(orch.timeout, Some(Duration::from_secs(120)));
    let db = d.component("digitron-db").unwrap();
    assert!(!db.wait);
    assert_eq!(db.timeout, None);
    assert_eq!(
        db.source.oci_reference().unwrap().tag.as_deref(),
        Some("16.4.0-rc.1")
    );
    assert_eq!(
        d.env_for_component("digitron-db"),
        BTreeMap::from([("DB_PASSWORD".to_string(), "s3cret".to_string())])
    );
    assert_eq!(d.env_for_component("digitron-orchestrator").len(), 2);
}

#[test]
fn parses_multi_document_state_and_skips_empty_documents() {
    // Fixture: three deployments, an empty document, a `...` end marker; the second has
    // no annotations and is identified by its metadata.name.
    let ds = parse_documents(&fixture("multi-doc.yaml")).unwrap();
    let ids: Vec<&str> = ds.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "0f83e682-a35b-4533-ae93-ff3810095f31",
            "metrics-collector",
            "5c9d7e1f-0a2b-4c3d-8e9f-a0b1c2d3e4f5"
        ]
    );
    assert_eq!(ds.iter().map(|d| d.index).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(ds[1].profile, ProfileType::ComposeV1);
    assert_eq!(ds[1].application_id, "com-example-metrics");
}

#[test]
fn accepts_empty_desired_state_as_no_deployments() {
    // An empty desired state means "remove everything", not an error.
    assert!(parse_documents(b"").unwrap().is_empty());
    assert!(
        parse_documents(b"# nothing\n---\n---\n")
            .unwrap()
            .is_empty()
    );
}

#[test]
fn rejects_text_that_is_not_yaml() {
    // Fixture: unclosed flow collection and a stray ':' indicator.
    let e = parse_documents(&fixture("bad-not-yaml.yaml")).unwrap_err();
    assert!(matches!(e, ModelError::Yaml { .. }), "{e}");
    assert_eq!(e.code(), ERR_DESIRED_STATE_INVALID);
    assert!(e.to_string().contains("line"), "{e}");
}

#[test]
fn rejects_document_of_another_kind_naming_it() {
    // Fixture: an ApplicationDeployment followed by a DeviceCapabilities document.
    let e = parse_documents(&fixture("bad-wrong-kind.yaml")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "document 2 is a DeviceCapabilities, not an ApplicationDeployment"
    );
    assert_eq!(e.code(), ERR_DESIRED_STATE_INVALID);
    let e = parse_documents(b"- a\n- b\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "document 1 is a list, not an ApplicationDeployment"
    );
}

#[test]
fn rejects_duplicate_deployment_ids() {
    // Fixture: two documents with annotations.id 0f83e682-….
    let e = parse_documents(&fixture("bad-duplicate-id.yaml")).unwrap_err();
    assert_eq!(
        e,
        ModelError::DuplicateId {
            id: "0f83e682-a35b-4533-ae93-ff3810095f31".into(),
            first: 1,
            second: 2
        }
    );
    assert_eq!(e.code(), ERR_DESIRED_STATE_INVALID);
    assert!(
        e.to_string()
            .contains("0f83e682-a35b-4533-ae93-ff3810095f31")
    );
}

#[test]
fn rejects_component_with_two_package_sources() {
    // Fixture: packageLocation and repository + revision in one component.
    let e = parse_documents(&fixture("bad-two-package-sources.yaml")).unwrap_err();
    assert_eq!(e.code(), ERR_DEPLOYMENT_INVALID);
    assert_eq!(
        e.deployment_id(),
        Some("0f83e682-a35b-4533-ae93-ff3810095f31")
    );
    let (field, reason) = invalid_reason(&e);
    assert_eq!(
        field,
        "spec.deploymentProfile.components[0] (\"hello\").properties"
    );
    assert!(reason.contains("exactly one package source"), "{reason}");
    assert!(
        e.to_string()
            .starts_with("document 1 (deployment \"0f83e682"),
        "{e}"
    );
}

#[test]
fn rejects_helm_profile_as_not_for_this_device() {
    // Fixture: a helm.v3 deployment profile.
    let e = parse_documents(&fixture("bad-helm-profile.yaml")).unwrap_err();
    assert_eq!(e.code(), ERR_DEPLOYMENT_INVALID);
    let (field, reason) = invalid_reason(&e);
    assert_eq!(field, "spec.deploymentProfile.type");
    assert!(reason.contains("Compose only"), "{reason}");
}

#[test]
fn rejects_input_over_the_size_cap() {
    let big = vec![b'#'; DOCUMENTS_MAX_BYTES + 1];
    let e = parse_documents(&big).unwrap_err();
    assert!(matches!(e, ModelError::TooLarge { .. }));
    assert!(matches!(
        parse_documents(b"kind: \xff\n"),
        Err(ModelError::NotUtf8 { offset: 6 })
    ));
}

#[test]
fn rejects_too_many_documents() {
    let one = doc_with("x", &oci_component("c"), "");
    let many: String = (0..=DOCUMENTS_MAX_COUNT)
        .map(|_| format!("---\n{one}"))
        .collect();
    assert!(matches!(
        parse_documents(many.as_bytes()),
        Err(ModelError::TooManyDocuments { .. })
    ));
}

#[test]
fn reports_type_errors_with_document_and_line() {
    // Document 2's `wait: sometimes` is not a boolean; the error names the document, its
    // deployment and the line in the whole input.
    let comp = "      - name: d\n        properties:\n          repository: r.example.com/a/d\n          revision: 1.0.0\n          wait: sometimes\n";
    let first = doc_with("abc", &oci_component("c"), "");
    let input = format!("{first}---\n{}", doc_with("def", comp, ""));
    let e = parse_documents(input.as_bytes()).unwrap_err();
    assert_eq!(e.code(), ERR_DEPLOYMENT_INVALID);
    assert_eq!(e.deployment_id(), Some("def"));
    assert_eq!(
        e.to_string(),
        "document 2 (deployment \"def\", name \"test\") is invalid: \
         invalid boolean at line 32, column 17"
    );
}

#[test]
fn deployment_id_falls_back_to_top_level_id_then_name() {
    let body =
        "spec:\n  applicationId: app\n  deploymentProfile:\n    type: compose\n    components:\n";
    let head = "apiVersion: application.margo.org/v1alpha1\nkind: ApplicationDeployment\n";
    let comp = oci_component("c");
    let top = format!("{head}id: top-id\nmetadata:\n  name: by-name\n{body}{comp}");
    assert_eq!(parse_documents(top.as_bytes()).unwrap()[0].id, "top-id");
    let named = format!("{head}metadata:\n  name: by-name\n{body}{comp}");
    assert_eq!(parse_documents(named.as_bytes()).unwrap()[0].id, "by-name");
    let none = format!("{head}metadata: {{}}\n{body}{comp}");
    let e = parse_documents(none.as_bytes()).unwrap_err();
    assert_eq!(invalid_reason(&e).0, "metadata.annotations.id");
    let clash = format!("{head}id: top-id\nmetadata:\n  annotations:\n    id: other\n{body}{comp}");
    let e = parse_documents(clash.as_bytes()).unwrap_err();
    assert!(invalid_reason(&e).1.contains("differs"), "{e}");
    let bad = format!("{head}metadata:\n  annotations:\n    id: \"../etc\"\n{body}{comp}");
    let e = parse_documents(bad.as_bytes()).unwrap_err();
    assert_eq!(invalid_reason(&e).0, "metadata.annotations.id");
}

#[test]
fn rejects_unsupported_api_versions() {
    let d = doc_with("x", &oci_component("c"), "");
    let v2 = d.replace("application.margo.org/v1", "application.margo.org/v2");
    let e = parse_documents(v2.as_bytes()).unwrap_err();
    assert!(invalid_reason(&e).1.contains("does not read"), "{e}");
    let other = d.replace("application.margo.org/v1", "apps/v1");
    let e = parse_documents(other.as_bytes()).unwrap_err();
    assert_eq!(invalid_reason(&e).0, "apiVersion");
}

#[test]
fn application_id_from_spec_and_annotations_must_agree() {
    let d = doc_with("x", &oci_component("c"), "").replace(
        "    id: x\n",
        "    id: x\n    applicationId: com-example-other\n",
    );
    let e = parse_documents(d.as_bytes()).unwrap_err();
    assert_eq!(invalid_reason(&e).0, "spec.applicationId");
}

#[test]
fn rejects_component_problems_with_field_paths() {
    let cases: &[(&str, &str, &str)] = &[
        // (component YAML, expected field suffix, expected reason fragment)
        (
            "      - name: Bad/Name\n        properties:\n          packageLocation: https://h/p\n",
            "components[0].name",
            "must start with",
        ),
        (
            "      - name: c\n        properties:\n          packageLocation: ftp://h/p\n",
            "packageLocation",
            "not an https://",
        ),
        (
            "      - name: c\n        properties:\n          packageLocation: https://user:pw@h/p\n",
            "packageLocation",
            "credentials",
        ),
        (
            "      - name: c\n        properties:\n          packageLocation: https://h:99999/p\n",
            "packageLocation",
            "invalid port",
        ),
        (
            "      - name: c\n        properties:\n          repository: oci://r.example.com/a/c\n",
            "revision",
            "repository needs a revision",
        ),
        (
            "      - name: c\n        properties:\n          repository: oci://r.example.com/a/c:1.0.0\n          revision: 1.0.0\n",
            "repository",
            "tag or digest",
        ),
        (
            "      - name: c\n        properties:\n          repository: oci://R.example.com/A/c\n          revision: 1.0.0\n",
            "repository",
            "lowercase",
        ),
        (
            "      - name: c\n        properties:\n          repository: oci://r.example.com/a/c\n          revision: v1.2.3\n",
            "revision",
            "without it",
        ),
        (
            "      - name: c\n        properties:\n          repository: oci://r.example.com/a/c\n          revision: 1.02.3\n",
            "revision",
            "not SemVer",
        ),
        (
            "      - name: c\n        properties:\n          repository: oci://r.example.com/a/c\n          revision: 1.0.0\n          keyLocation: https://h/k\n",
            "keyLocation",
            "only applies to packageLocation",
        ),
        (
            "      - name: c\n        properties:\n          repository: oci://r.example.com/a/c\n          revision: 1.0.0\n          timeout: 5 minutes\n",
            "timeout",
            "",
        ),
        (
            "      - name: c\n        properties:\n          repository: oci://r.example.com/a/c\n          revision: 1.0.0\n          timeout: 0s\n",
            "timeout",
            "longer than 0s",
        ),
        ("      - name: c\n", "properties", "missing"),
        (
            "      - name: c\n        properties:\n          wait: true\n",
            "properties",
            "names no package",
        ),
        (
            "      - name: web\n        properties:\n          packageLocation: https://h/a\n      - name: WEB\n        properties:\n          packageLocation: https://h/b\n",
            "components[1].name",
            "same as component",
        ),
    ];
    for (comp, field, reason) in cases {
        let e = parse_documents(doc_with("x", comp, "").as_bytes()).unwrap_err();
        let (f, r) = invalid_reason(&e);
        assert!(f.ends_with(field), "case {comp:?}: field {f:?}, {e}");
        assert!(r.contains(reason), "case {comp:?}: reason {r:?}");
    }
    let no_components = doc_with("x", "", "");
    let e = parse_documents(no_components.as_bytes()).unwrap_err();
    assert_eq!(invalid_reason(&e).0, "spec.deploymentProfile.components");
}

#[test]
fn accepts_plain_http_locations_and_pinned_digests() {
    let comp = "      - name: a\n        properties:\n          packageLocation: http://10.0.0.5:8080/p.tar.gz\n      - name: b\n        properties:\n          repository: localhost:5000/apps/b\n          revision: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n";
    let d = &parse_documents(doc_with("x", comp, "").as_bytes()).unwrap()[0];
    let PackageSource::Url { location, .. } = &d.components[0].source else {
        panic!("expected URL source");
    };
    assert!(location.is_plain_http());
    let r = d.components[1].source.oci_reference().unwrap();
    assert!(r.tag.is_none());
    assert!(r.digest.is_some());
}

#[test]
fn rejects_parameter_targets_that_do_not_resolve() {
    let comps = format!("{}{}", oci_component("a"), oci_component("b"));
    let unknown = "  parameters:\n    p:\n      value: 1\n      targets:\n        - pointer: P\n          components: [c]\n";
    let e = parse_documents(doc_with("x", &comps, unknown).as_bytes()).unwrap_err();
    assert!(invalid_reason(&e).1.contains("does not have"), "{e}");
    let bad_pointer = "  parameters:\n    p:\n      value: 1\n      targets:\n        - pointer: global.ingress.host\n";
    let e = parse_documents(doc_with("x", &comps, bad_pointer).as_bytes()).unwrap_err();
    assert_eq!(invalid_reason(&e).0, "spec.parameters.p.targets[0].pointer");
    let conflict = "  parameters:\n    p:\n      value: 1\n      targets:\n        - pointer: P\n    q:\n      value: 2\n      targets:\n        - pointer: P\n          components: [b]\n";
    let e = parse_documents(doc_with("x", &comps, conflict).as_bytes()).unwrap_err();
    assert!(invalid_reason(&e).1.contains("different value"), "{e}");
    let same = conflict.replace("value: 2", "value: 1");
    assert!(parse_documents(doc_with("x", &comps, &same).as_bytes()).is_ok());
}

#[test]
fn missing_parameter_value_is_empty_string() {
    let p = "  parameters:\n    p:\n      targets:\n        - pointer: P\n";
    let d = &parse_documents(doc_with("x", &oci_component("c"), p).as_bytes()).unwrap()[0];
    assert_eq!(
        d.env_for_component("c").get("P").map(String::as_str),
        Some("")
    );
}

#[test]
fn project_names_follow_reference_agent_and_compose_rules() {
    assert_eq!(
        project_name(
            "A3E2F5DC-912e-494f-8395-52cf3769bc06",
            "Digitron.Orchestrator"
        ),
        "digitronorchestrator-a3e2f5dc"
    );
    // Name-derived ids sharing a prefix get distinct, hash-derived suffixes.
    let a = project_name("digitron-a", "web");
    let b = project_name("digitron-b", "web");
    assert_ne!(a, b);
    assert!(a.starts_with("web-") && a.len() == "web-".len() + 8, "{a}");
    for p in [&a, &b] {
        assert!(
            p.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
        );
    }
}

#[test]
fn rejects_deployments_that_would_share_a_compose_project() {
    let one = doc_with("0f83e682-0001", &oci_component("web"), "");
    let two = doc_with("0f83e682-0002", &oci_component("web"), "");
    let e = parse_documents(format!("{one}---\n{two}").as_bytes()).unwrap_err();
    assert!(matches!(e, ModelError::ProjectClash { .. }), "{e}");
    assert!(e.to_string().contains("web-0f83e682"), "{e}");
}

#[test]
fn content_digest_ignores_formatting_but_sees_values() {
    let a = doc_with("x", &oci_component("c"), "");
    let reformatted = format!(
        "# a comment\n{}",
        a.replace(
            "kind: ApplicationDeployment",
            "kind: \"ApplicationDeployment\""
        )
    )
    .replace(
        "metadata:\n  name: test\n",
        "metadata: {name: test,\n  annotations: {id: x}}\n",
    )
    .replace("  annotations:\n    id: x\n", "");
    let da = &parse_documents(a.as_bytes()).unwrap()[0];
    let db = &parse_documents(reformatted.as_bytes()).unwrap()[0];
    assert_eq!(da.content_digest(), db.content_digest());
    assert_eq!(da.canonical_json(), db.canonical_json());
    let changed = a.replace("revision: 1.0.0", "revision: 1.0.1");
    let dc = &parse_documents(changed.as_bytes()).unwrap()[0];
    assert_ne!(da.content_digest(), dc.content_digest());
    // Fields the agent does not read are not part of the digest.
    let extra = a.replace(
        "kind: ApplicationDeployment\n",
        "kind: ApplicationDeployment\nstatus: {x: 1}\n",
    );
    let dd = &parse_documents(extra.as_bytes()).unwrap()[0];
    assert_eq!(da.content_digest(), dd.content_digest());
}

#[test]
fn error_messages_have_no_debug_output() {
    let e = parse_documents(&fixture("bad-two-package-sources.yaml")).unwrap_err();
    let msg = e.to_string();
    assert!(!msg.contains("Some(") && !msg.contains('{'), "{msg}");
}

#[test]
fn refuses_non_ascii_package_urls_and_oversized_timeouts_without_panicking() {
    // A multi-byte character where the scheme prefix would end must not split a char.
    let url = "      - name: web\n        properties:\n          packageLocation: \"https:/é/x\"\n";
    let e = crate::model::parse_documents(doc_with("abc", url, "").as_bytes()).unwrap_err();
    assert!(e.to_string().contains("packageLocation"), "{e}");

    let timeout = |t: &str| {
        format!(
            "      - name: web\n        properties:\n          repository: oci://r.example.com/a/web\n          revision: 1.0.0\n          wait: true\n          timeout: \"{t}\"\n"
        )
    };
    for t in ["18446744073709551615", "8760h"] {
        let e =
            crate::model::parse_documents(doc_with("abc", &timeout(t), "").as_bytes()).unwrap_err();
        assert!(e.to_string().contains("timeout"), "{t}: {e}");
    }
    assert!(crate::model::parse_documents(doc_with("abc", &timeout("5m"), "").as_bytes()).is_ok());
}
