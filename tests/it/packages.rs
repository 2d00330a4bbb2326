//! `kiln deps`: git packages from a local repository (at a tag, a commit, a branch, a
//! subdirectory), the packages they declare, `package-lock.yml` honoured and upgraded, and
//! failures that leave `dbt_packages/` and the lock as they were. Runs the real `git`.

use crate::common::*;
use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.email=k@example.com", "-c", "user.name=kiln", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git is installed");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository holding package `greet` (whose `greeting()` says `hello`, tagged `v1`, then
/// `hello again`), and package `helper` in `sub/helper`, which `greet` declares as a git package.
fn package_repo(d: &Path) -> (String, String) {
    let repo = d.join("repo");
    write(&repo, "dbt_project.yml", "name: greet\nversion: '1.0'\nconfig-version: 2\n");
    write(&repo, "macros/greeting.sql", "{% macro greeting() %}'hello'{% endmacro %}\n");
    write(&repo, "sub/helper/dbt_project.yml", "name: helper\nversion: '0.1'\nconfig-version: 2\n");
    write(&repo, "sub/helper/macros/twice.sql", "{% macro twice(x) %}({{ x }}) * 2{% endmacro %}\n");
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "v1"]);
    git(&repo, &["tag", "v1"]);
    let v1 = git(&repo, &["rev-parse", "HEAD"]);
    write(&repo, "macros/greeting.sql", "{% macro greeting() %}'hello again'{% endmacro %}\n");
    write(
        &repo,
        "packages.yml",
        &format!("packages:\n  - git: \"file://{}\"\n    subdirectory: sub/helper\n    revision: v1\n", repo.display()),
    );
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "v2"]);
    (v1, git(&repo, &["rev-parse", "HEAD"]))
}

fn project(d: &Path, packages: &str) -> std::path::PathBuf {
    let p = d.join("proj");
    write(&p, "dbt_project.yml", "name: proj\nconfig-version: 2\n");
    write(&p, "models/hi.sql", "select {{ greet.greeting() }} as g\n");
    write(&p, "packages.yml", packages);
    p
}

fn greeting(p: &Path) -> String {
    let out = run(p, &["build"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run(p, &["show", "--inline", "select g from {{ ref('hi') }}", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let row: serde_json::Value = serde_json::from_str(stdout(&out).lines().next().unwrap_or_default()).unwrap();
    row["g"].as_str().unwrap().to_string()
}

fn deps(p: &Path, args: &[&str]) -> String {
    let out = kiln(p).arg("deps").args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stderr(&out) + &stdout(&out)
}

#[test]
fn git_packages_install_at_a_tag_and_a_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let (v1, v2) = package_repo(tmp.path());
    let url = format!("file://{}", tmp.path().join("repo").display());
    // At the tag: the package as it was then, and no packages of its own yet.
    let p = project(tmp.path(), &format!("packages:\n  - git: \"{url}\"\n    revision: v1\n"));
    let out = deps(&p, &[]);
    assert!(out.contains(&format!("Installed greet (revision {})", &v1[..7])), "{out}");
    let lock = std::fs::read_to_string(p.join("package-lock.yml")).unwrap();
    assert!(lock.starts_with(&format!("packages:\n  - git: {url}\n    name: greet\n    revision: {v1}\n")), "{lock}");
    assert!(!p.join("dbt_packages/greet/.git").exists() && !p.join("dbt_packages/helper").exists());
    assert_eq!(greeting(&p), "hello");
    // At the commit: the newer macro, and `helper` (a subdirectory of the same repository) that
    // it declares, resolved too and usable.
    write(&p, "packages.yml", &format!("packages:\n  - git: \"{url}\"\n    revision: {v2}\n"));
    write(&p, "models/four.sql", "select {{ helper.twice(2) }} as n\n");
    let out = deps(&p, &[]);
    assert!(out.contains("out of date") && out.contains("Installed helper (revision") && out.contains("subdirectory sub/helper"), "{out}");
    let lock = std::fs::read_to_string(p.join("package-lock.yml")).unwrap();
    assert!(lock.contains(&format!("    name: greet\n    revision: {v2}\n")) && lock.contains("    name: helper\n"), "{lock}");
    assert!(lock.contains(&format!("    revision: {v1}\n    subdirectory: sub/helper\n")), "helper pinned at its tag: {lock}");
    assert_eq!(greeting(&p), "hello again");
    let out = run(&p, &["show", "--inline", "select n from {{ ref('four') }}", "-o", "json"]);
    assert!(stdout(&out).contains("4"), "{}", stdout(&out));
}

#[test]
fn the_lock_pins_a_branch_until_upgrade() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, v2) = package_repo(tmp.path());
    let repo = tmp.path().join("repo");
    // A relative local path to the repository, on its default branch: warned about, pinned.
    let p = project(tmp.path(), "packages:\n  - git: ../repo\n");
    let out = deps(&p, &[]);
    assert!(out.contains("warning[E510]") && out.contains("follows `HEAD`"), "{out}");
    assert!(std::fs::read_to_string(p.join("package-lock.yml")).unwrap().contains(&v2));
    // The branch moves on; `kiln deps` installs what the lock pins, `--upgrade` the new commit.
    write(&repo, "macros/greeting.sql", "{% macro greeting() %}'hello three'{% endmacro %}\n");
    git(&repo, &["commit", "-qam", "v3"]);
    let v3 = git(&repo, &["rev-parse", "HEAD"]);
    let out = deps(&p, &[]);
    assert!(out.contains("pinned in package-lock.yml"), "{out}");
    assert_eq!(greeting(&p), "hello again");
    deps(&p, &["--upgrade"]);
    assert!(std::fs::read_to_string(p.join("package-lock.yml")).unwrap().contains(&v3));
    assert_eq!(greeting(&p), "hello three");
    // `--lock` writes the lock and installs nothing.
    std::fs::remove_dir_all(p.join("dbt_packages")).unwrap();
    std::fs::remove_file(p.join("package-lock.yml")).unwrap();
    deps(&p, &["--lock"]);
    assert!(p.join("package-lock.yml").exists() && !p.join("dbt_packages").exists());
}

#[test]
fn a_failed_install_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    package_repo(tmp.path());
    let url = format!("file://{}", tmp.path().join("repo").display());
    let p = project(tmp.path(), &format!("packages:\n  - git: \"{url}\"\n    revision: v1\n"));
    deps(&p, &[]);
    let before = (dump_tree(&p.join("dbt_packages")), std::fs::read_to_string(p.join("package-lock.yml")).unwrap());
    let cases = [
        (format!("  - git: \"{url}\"\n    revision: v9\n"), "revision `v9` is not a tag, branch or full commit", "tags: `v1`"),
        (
            format!("  - git: \"{url}\"\n    revision: v1\n    subdirectory: nope\n"),
            "(subdirectory `nope`) is not a dbt package",
            "packages.yml:5",
        ),
        (
            format!("  - git: \"{url}\"\n    revision: v1\n  - git: \"{url}.git\"\n    revision: main\n"),
            "is required at two revisions: `v1` and `main`",
            "packages.yml:7",
        ),
        ("  - git: \"file:///nonexistent/repo\"\n".to_string(), "cannot fetch git package `file:///nonexistent/repo`", "packages.yml:5"),
        (
            "  - package: dbt-labs/codegen\n    version: [\">=0.12.0\", \"<0.14.0\"]\n".to_string(),
            "error[E504]: hub package `dbt-labs/codegen` (>=0.12.0, <0.14.0)",
            "vendor/codegen",
        ),
    ];
    for (extra, message, place) in cases {
        // A good package first: it is fetched, and then thrown away with the rest.
        write(&p, "packages.yml", &format!("packages:\n  - git: \"{url}\"\n    subdirectory: sub/helper\n    revision: v1\n{extra}"));
        let out = kiln(&p).arg("deps").output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(message) && err.contains(place), "expected `{message}` at {place}:\n{err}");
        assert!(err.contains("nothing was installed"), "{err}");
        let after = (dump_tree(&p.join("dbt_packages")), std::fs::read_to_string(p.join("package-lock.yml")).unwrap());
        assert_eq!(before, after, "{message}");
        let leftovers: Vec<_> = std::fs::read_dir(&p)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().contains("kiln-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

/// A git URL with a credential rendered from a secret: the lock keeps the URL as written, and no
/// output shows the secret.
#[test]
fn git_credentials_stay_out_of_the_lock_and_the_output() {
    let tmp = tempfile::tempdir().unwrap();
    package_repo(tmp.path());
    let p = project(tmp.path(), "packages:\n  - git: \"{{ env_var('DBT_ENV_SECRET_GIT_URL') }}\"\n    revision: v1\n");
    let secret = format!("file://{}", tmp.path().join("repo").display());
    let out = kiln(&p).arg("deps").env("DBT_ENV_SECRET_GIT_URL", &secret).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lock = std::fs::read_to_string(p.join("package-lock.yml")).unwrap();
    assert!(lock.contains("  - git: '{{ env_var(''DBT_ENV_SECRET_GIT_URL'') }}'\n") && !lock.contains(&secret), "{lock}");
    assert!(!(stderr(&out) + &stdout(&out)).contains(&secret));
    // Installing from the lock renders the URL again.
    std::fs::remove_dir_all(p.join("dbt_packages")).unwrap();
    let out = kiln(&p).arg("deps").env("DBT_ENV_SECRET_GIT_URL", &secret).output().unwrap();
    assert!(out.status.code() == Some(0) && p.join("dbt_packages/greet/dbt_project.yml").exists(), "{}", stderr(&out));
    // A wrong secret: the error names the URL as written.
    let out = kiln(&p).args(["deps", "--upgrade"]).env("DBT_ENV_SECRET_GIT_URL", "file:///no/such/repo-token-123").output().unwrap();
    let err = stderr(&out);
    assert!(out.status.code() == Some(1) && err.contains("DBT_ENV_SECRET_GIT_URL") && !err.contains("repo-token-123"), "{err}");
}

/// dbt-core writes the same `package-lock.yml` for the same declarations, and each tool installs
/// from the other's lock without resolving again.
#[test]
fn the_lock_is_dbts() {
    let Some(dbt) = crate::dbt_parity::dbt_executable("the package-lock parity test") else { return };
    let tmp = tempfile::tempdir().unwrap();
    package_repo(tmp.path());
    let url = format!("file://{}", tmp.path().join("repo").display());
    let packages = format!(
        "packages:\n  - git: \"{url}\"\n    revision: v1\n  - git: \"{}\"\n    subdirectory: sub/helper\n    revision: main\n    warn-unpinned: false\n",
        tmp.path().join("repo").display()
    );
    let p = project(tmp.path(), &packages);
    write(&p, "profiles.yml", "proj:\n  target: d\n  outputs:\n    d: {type: duckdb, path: dbt.duckdb}\n");
    write(&p, "dbt_project.yml", "name: proj\nconfig-version: 2\nprofile: proj\n");
    let dbt_deps = || {
        let out = Command::new(&dbt)
            .args(["deps", "--profiles-dir", "."])
            .current_dir(&p)
            .env("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
            .output()
            .unwrap();
        assert!(out.status.success(), "dbt deps: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    dbt_deps();
    let theirs = std::fs::read_to_string(p.join("package-lock.yml")).unwrap();
    std::fs::remove_file(p.join("package-lock.yml")).unwrap();
    deps(&p, &[]);
    let ours = std::fs::read_to_string(p.join("package-lock.yml")).unwrap();
    assert_eq!(ours, theirs);
    // dbt reads kiln's lock as its own: it installs without updating it.
    let out = dbt_deps();
    assert!(!out.contains("Updating lock file"), "{out}");
    assert!(deps(&p, &[]).contains("pinned in package-lock.yml"));
}
