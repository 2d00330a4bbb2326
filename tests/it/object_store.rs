//! Sources and external models on S3, against a real S3 server on loopback (moto; `.ci/run`
//! starts it and sets `KILN_TEST_S3_ENDPOINT`).

use crate::common::*;
use std::io::{Read, Write};

/// A plain HTTP PUT (bucket creation and uploads; the test server takes unsigned requests).
fn http_put(endpoint: &str, path: &str, body: &[u8]) -> u16 {
    let addr = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(addr).expect("S3 server reachable");
    write!(s, "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).unwrap();
    s.write_all(body).unwrap();
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[test]
fn s3_sources_and_external_models() {
    let Some(endpoint) = peer("KILN_TEST_S3_ENDPOINT", "the S3 test") else { return };
    let bucket = format!("kiln-test-{}", std::process::id());
    assert_eq!(http_put(&endpoint, &format!("/{bucket}"), b""), 200, "create bucket");
    assert_eq!(http_put(&endpoint, &format!("/{bucket}/raw/people.csv"), b"id,name\n1,ada\n2,ben\n3,cy\n"), 200, "upload");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let write = |p: &str, t: &str| {
        let p = d.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, t).unwrap();
    };
    write("dbt_project.yml", "name: lake\nconfig-version: 2\nprofile: lake\n");
    write(
        "profiles.yml",
        &format!(
            "lake:\n  target: dev\n  outputs:\n    dev:\n      type: datafusion\n      s3_endpoint: {endpoint}\n      s3_region: us-east-1\n      s3_access_key_id: testing\n      s3_secret_access_key: very-secret-key\n"
        ),
    );
    write(
        "models/sources.yml",
        &format!(
            "version: 2\nsources:\n  - name: lake\n    tables:\n      - name: people\n        meta:\n          external_location: s3://{bucket}/raw/people.csv\n"
        ),
    );
    write(
        "models/people_out.sql",
        &format!(
            "{{{{ config(materialized='external', location='s3://{bucket}/out/people.parquet') }}}}\nselect id, upper(name) as name from {{{{ source('lake', 'people') }}}}\n"
        ),
    );
    write("models/counted.sql", "{{ config(materialized='table') }}\nselect count(*) as n from {{ ref('people_out') }}\n");
    let out = run(d, &["build"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("very-secret-key"), "{err}");
    let out = run(d, &["show", "--inline", "select n from {{ ref('counted') }}", "-o", "json"]);
    assert_eq!(stdout(&out).trim(), "{\"n\":3}", "{}", stderr(&out));
    // The external model's object is on S3 and readable in a later process.
    let out = run(d, &["show", "--inline", "select name from {{ ref('people_out') }} order by id", "-o", "json"]);
    assert_eq!(
        stdout(&out).lines().collect::<Vec<_>>(),
        ["{\"name\":\"ADA\"}", "{\"name\":\"BEN\"}", "{\"name\":\"CY\"}"],
        "{}",
        stderr(&out)
    );
}
