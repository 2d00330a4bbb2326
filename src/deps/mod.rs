//! `kiln deps`: resolves `packages.yml` to `package-lock.yml` and installs the lock into
//! `packages-install-path`, all or nothing.
//!
//! As dbt: the lock is resolved again when it is missing, when `--upgrade` asks, or when the
//! declarations changed since it was written (its `sha1_hash`); otherwise the pinned commits are
//! installed. Git packages are checked out at their commit (a tag, branch or `HEAD` is resolved to
//! one), local packages are symlinked, and the packages each package declares are resolved too.
//!
//! Unlike dbt, nothing is half-done: packages are staged beside the install directory and swapped
//! in only when every one of them is ready, and the lock is written after that. A failure leaves
//! the previous `dbt_packages/` and `package-lock.yml` as they were.

pub mod git;

use crate::diagnostics::{Code, Diagnostic, Diagnostics, Label, SourceText};
use crate::project::packages::{self, Declarations, Declared, LOCK_FILE, Lock, Locked, Pin, Render, Source};
use crate::project::yaml::{self, YNode};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Resolve again even when the lock matches the declarations (`--upgrade`).
    pub upgrade: bool,
    /// Write the lock only, install nothing (`--lock`).
    pub lock_only: bool,
}

/// What `kiln deps` did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Each package and how it was installed (`revision 1a2b3c4`, `local ../x`).
    pub installed: Vec<(String, String)>,
    pub lock_written: bool,
    pub warnings: Vec<Diagnostic>,
}

/// Installs `declarations` (rendered by `render` as it goes) into `root/install_path`.
pub fn run(
    root: &Path,
    install_path: &str,
    declarations: &Declarations,
    render: Render,
    options: Options,
    progress: &mut dyn FnMut(&str),
) -> Result<Outcome, Diagnostics> {
    let lock_file = root.join(LOCK_FILE);
    let previous = match std::fs::read_to_string(&lock_file) {
        Ok(text) => Some(Lock::parse(&SourceText::new(LOCK_FILE, text.as_str()))?),
        Err(_) => None,
    };
    let hash = packages::declarations_hash(&declarations.packages);
    let stale = options.upgrade || previous.as_ref().is_none_or(|l| l.sha1_hash.as_deref() != Some(hash.as_str()));
    let mut staging = Staging::new(root, install_path)?;
    let mut outcome = Outcome::default();
    let missing = previous.is_none();
    let lock = match previous {
        Some(lock) if !stale && options.lock_only => lock,
        Some(lock) if !stale => {
            progress(&format!("Installing the {} package(s) pinned in {LOCK_FILE}", lock.packages.len()));
            for locked in &lock.packages {
                let how = staging.install(locked, render)?;
                progress(&format!("Installed {} ({how})", locked.name));
                outcome.installed.push((locked.name.clone(), how));
            }
            lock
        }
        _ => {
            progress(&format!(
                "Resolving {} ({LOCK_FILE} {})",
                declarations.file.path,
                if options.upgrade {
                    "upgraded"
                } else if missing {
                    "missing"
                } else {
                    "out of date"
                }
            ));
            let mut resolver = Resolver { root, render, staging: &mut staging, outcome: &mut outcome, progress, seen: HashMap::new() };
            let packages = resolver.resolve(declarations)?;
            outcome.lock_written = true;
            Lock { packages, sha1_hash: Some(hash) }
        }
    };
    if !options.lock_only {
        staging.publish()?;
    }
    if outcome.lock_written {
        std::fs::write(&lock_file, lock.to_yaml()).map_err(|e| io_error(&lock_file, e))?;
    }
    Ok(outcome)
}

struct Resolver<'a> {
    root: &'a Path,
    render: Render<'a>,
    staging: &'a mut Staging,
    outcome: &'a mut Outcome,
    progress: &'a mut dyn FnMut(&str),
    /// Package key -> (the revision it was resolved at, its name).
    seen: HashMap<String, (Option<String>, String)>,
}

impl Resolver<'_> {
    /// Resolves the declared packages and, breadth first, the packages they declare.
    fn resolve(&mut self, root_declarations: &Declarations) -> Result<Vec<Locked>, Diagnostics> {
        let mut queue: VecDeque<(Declared, SourceText)> =
            root_declarations.packages.iter().map(|d| (d.clone(), root_declarations.file.clone())).collect();
        let mut locked: Vec<Locked> = Vec::new();
        while let Some((declared, file)) = queue.pop_front() {
            let at = |message: String, code: Code| {
                Diagnostic::error(code, message).with_label(Label::new(file.clone(), declared.line, 1, 1, declared.as_written()))
            };
            let revision = match &declared.source {
                Source::Git { revision, .. } => revision.clone(),
                _ => None,
            };
            let key = declared.source.key();
            if let Some((seen_revision, name)) = self.seen.get(&key) {
                if *seen_revision != revision {
                    let show = |r: &Option<String>| r.clone().unwrap_or_else(|| "HEAD".into());
                    return Err(at(
                        format!(
                            "{} ({name}) is required at two revisions: `{}` and `{}`",
                            declared.as_written(),
                            show(seen_revision),
                            show(&revision)
                        ),
                        Code::PackageInstall,
                    )
                    .with_help("require one revision of a git package everywhere it is declared")
                    .into());
                }
                continue;
            }
            let (entry, dir) = self
                .fetch(&declared, &file)
                .map_err(|d| Diagnostics::from(d.with_label(Label::new(file.clone(), declared.line, 1, 1, declared.as_written()))))?;
            if let Some(other) = locked.iter().find(|l| l.name == entry.name) {
                return Err(at(
                    format!("{} and {} are both named `{}`", other.pin.describe(), declared.as_written(), entry.name),
                    Code::PackageInstall,
                )
                .with_help("declare each package once")
                .into());
            }
            self.seen.insert(key, (revision, entry.name.clone()));
            if let Some(nested) = read_declarations(&dir, self.render)? {
                queue.extend(nested.packages.iter().map(|d| (d.clone(), nested.file.clone())));
            }
            locked.push(entry);
        }
        Ok(locked)
    }

    /// Stages one declared package; returns its lock entry and where its files are.
    fn fetch(&mut self, declared: &Declared, file: &SourceText) -> Result<(Locked, PathBuf), Diagnostic> {
        let raw = |key: &str| declared.raw.get(key).and_then(YNode::scalar_string);
        match &declared.source {
            Source::Local { path } => {
                let dir = self.root.join(path);
                let name = project_name(&dir).map_err(|e| Diagnostic::error(Code::BadLocalPackage, e))?;
                let how = self.staging.link(&name, &dir)?;
                self.installed(&name, how);
                Ok((Locked { name, pin: Pin::Local { path: path.clone() } }, dir))
            }
            Source::Git { url, revision, subdirectory, warn_unpinned } => {
                let revision = revision.as_deref().unwrap_or("HEAD");
                if *warn_unpinned && matches!(revision, "HEAD" | "main" | "master") {
                    self.outcome.warnings.push(
                        Diagnostic::warning(
                            Code::UnpinnedPackage,
                            format!(
                                "{} follows `{revision}`: a new commit there changes your build without warning",
                                declared.as_written()
                            ),
                        )
                        .with_label(Label::new(file.clone(), declared.line, 1, 1, "not pinned to a tag or commit"))
                        .with_help("set `revision:` to a tag or a full commit, or `warn-unpinned: false`"),
                    );
                }
                let shown = raw("git").unwrap_or_else(|| url.clone());
                let located = git::locate(url, self.root);
                (self.progress)(&format!("Resolving {shown} at {revision}"));
                let commit = git::resolve(&located, revision).map_err(|e| fetch_error(&shown, url, &e))?;
                let pin = Pin::Git { url: shown, commit, subdirectory: subdirectory.clone() };
                let (name, dir, how) = self.staging.git(&pin, &located, url)?;
                self.installed(&name, how);
                Ok((Locked { name, pin }, dir))
            }
            Source::Hub { package, version } => {
                let (name, dir, installed_version) =
                    self.staging.keep_hub(&declared.source, declared.name.as_deref()).ok_or_else(|| {
                        Diagnostic::error(
                            Code::RemotePackage,
                            format!("hub package `{package}` ({}) cannot be installed: kiln cannot reach the dbt hub", version.join(", ")),
                        )
                        .with_help(crate::project::hub_help(package, version))
                    })?;
                self.installed(&name, format!("kept the installed copy, version {installed_version}"));
                Ok((Locked { name, pin: Pin::Hub { package: package.clone(), version: installed_version } }, dir))
            }
            Source::Tarball { .. } | Source::Private { .. } => Err(Diagnostic::error(
                Code::PackageInstall,
                format!("{} needs the network: kiln installs git and local packages", declared.as_written()),
            )
            .with_help("declare it as a `git:` package, or vendor a copy and declare it as `local:`")),
        }
    }

    fn installed(&mut self, name: &str, how: String) {
        (self.progress)(&format!("Installed {name} ({how})"));
        self.outcome.installed.push((name.to_string(), how));
    }
}

/// A git failure, naming the URL as written: never the rendered one, which may hold a token.
fn fetch_error(shown: &str, rendered: &str, message: &str) -> Diagnostic {
    Diagnostic::error(Code::PackageInstall, format!("cannot fetch git package `{shown}`: {}", scrub(message, rendered, shown)))
        .with_help("check the URL and `revision:`; for a private repository, make its credentials available to git")
}

/// `message` without any part of a rendered URL that differs from the URL as written: the URL,
/// its part after the scheme (git prints paths), its user info and password.
fn scrub(message: &str, rendered: &str, shown: &str) -> String {
    if rendered == shown {
        return message.to_string();
    }
    let rest = rendered.split_once("://").map_or(rendered, |(_, r)| r);
    let userinfo = rest.split_once('@').map_or("", |(u, _)| u);
    let password = userinfo.split_once(':').map_or("", |(_, p)| p);
    let mut forms: Vec<&str> = [rendered, rest, userinfo, password].into_iter().filter(|f| f.len() >= 4).collect();
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms.iter().fold(message.to_string(), |m, f| m.replace(f, "*****"))
}

fn io_error(path: &Path, e: std::io::Error) -> Diagnostics {
    Diagnostic::error(Code::PackageInstall, format!("cannot write {}: {e}", path.display())).into()
}

/// The `name:` of the project in `dir`.
fn project_name(dir: &Path) -> Result<String, String> {
    let file = dir.join("dbt_project.yml");
    let text = std::fs::read_to_string(&file).map_err(|_| format!("{} holds no dbt_project.yml", dir.display()))?;
    let doc = yaml::parse(&text).map_err(|e| format!("invalid YAML in {}: {}", file.display(), e.message))?;
    doc.get("name").and_then(YNode::scalar_string).ok_or_else(|| format!("{} has no `name:`", file.display()))
}

/// The packages a package declares, rendered.
fn read_declarations(dir: &Path, render: Render) -> Result<Option<Declarations>, Diagnostics> {
    let Some((name, text)) =
        ["packages.yml", "dependencies.yml"].into_iter().find_map(|n| Some((n, std::fs::read_to_string(dir.join(n)).ok()?)))
    else {
        return Ok(None);
    };
    let mut diags = vec![];
    let shown = format!("{}/{name}", dir.display());
    let declarations = packages::parse_declarations(SourceText::new(shown, text.as_str()), Some(render), &mut diags);
    if diags.is_empty() { Ok(Some(declarations)) } else { Err(Diagnostics(diags)) }
}

/// The new install directory, built beside the current one and swapped in when complete.
struct Staging {
    root: PathBuf,
    install: PathBuf,
    dir: PathBuf,
    fetches: usize,
}

impl Staging {
    fn new(root: &Path, install_path: &str) -> Result<Staging, Diagnostics> {
        let install = root.join(install_path);
        let dir = root.join(format!("{}.kiln-staging", install_path.trim_end_matches('/')));
        let _ = std::fs::remove_dir_all(&dir); // left by an interrupted run
        std::fs::create_dir_all(dir.join(".fetch")).map_err(|e| io_error(&dir, e))?;
        Ok(Staging { root: root.to_path_buf(), install, dir, fetches: 0 })
    }

    /// Installs one locked package (the lock is up to date); returns how.
    fn install(&mut self, locked: &Locked, render: Render) -> Result<String, Diagnostics> {
        let at_lock = |d: Diagnostic| Diagnostics::from(d.with_note(format!("while installing `{}` from {LOCK_FILE}", locked.name)));
        match &locked.pin {
            Pin::Local { path } => {
                let dir = self.root.join(path);
                self.link(&locked.name, &dir).map_err(at_lock)
            }
            Pin::Git { url, .. } => {
                let rendered = if url.contains("{{") { render(url).map_err(|e| at_lock(fetch_error(url, url, &e)))? } else { url.clone() };
                let located = git::locate(&rendered, &self.root);
                let (name, _, how) = self.git(&locked.pin, &located, &rendered).map_err(at_lock)?;
                if name != locked.name {
                    return Err(at_lock(
                        Diagnostic::error(
                            Code::PackageInstall,
                            format!("{url} holds project `{name}` where {LOCK_FILE} says `{}`", locked.name),
                        )
                        .with_help("run `kiln deps --upgrade` to resolve the packages again"),
                    ));
                }
                Ok(how)
            }
            Pin::Hub { package, version } => {
                let source = Source::Hub { package: package.clone(), version: vec![version.clone()] };
                match self.keep_hub(&source, Some(&locked.name)) {
                    Some((_, _, installed)) if installed == *version => Ok(format!("kept the installed copy, version {installed}")),
                    _ => Err(at_lock(
                        Diagnostic::error(
                            Code::RemotePackage,
                            format!("hub package `{package}` {version} cannot be installed: kiln cannot reach the dbt hub"),
                        )
                        .with_help(crate::project::hub_help(package, std::slice::from_ref(version))),
                    )),
                }
            }
            Pin::Tarball { url } => Err(at_lock(
                Diagnostic::error(
                    Code::PackageInstall,
                    format!("tarball package `{url}` needs the network: kiln installs git and local packages"),
                )
                .with_help("declare it as a `git:` package, or vendor a copy and declare it as `local:`"),
            )),
        }
    }

    /// Checks out a git pin; returns the package's name, its staged directory and how.
    fn git(&mut self, pin: &Pin, located: &str, rendered: &str) -> Result<(String, PathBuf, String), Diagnostic> {
        let Pin::Git { url, commit, subdirectory } = pin else { unreachable!("a git pin") };
        self.fetches += 1;
        let checkout = self.dir.join(".fetch").join(self.fetches.to_string());
        git::checkout(located, commit, &checkout).map_err(|e| fetch_error(url, rendered, &e))?;
        let package = git::package_dir(&checkout, subdirectory.as_deref());
        let name = project_name(&package).map_err(|e| {
            let place = subdirectory.as_ref().map_or(String::new(), |s| format!(" (subdirectory `{s}`)"));
            fetch_error(url, rendered, &format!("commit {commit}{place} is not a dbt package: {e}"))
        })?;
        let dest = self.dir.join(&name);
        if dest.symlink_metadata().is_ok() {
            return Err(
                Diagnostic::error(Code::PackageInstall, format!("two packages are named `{name}`")).with_help("declare each package once")
            );
        }
        std::fs::rename(&package, &dest).map_err(|e| Diagnostic::error(Code::PackageInstall, format!("cannot stage {name}: {e}")))?;
        let how = match subdirectory {
            Some(sub) => format!("revision {}, subdirectory {sub}", &commit[..7.min(commit.len())]),
            None => format!("revision {}", &commit[..7.min(commit.len())]),
        };
        Ok((name, dest, how))
    }

    /// Links a local package (a copy where symlinks are not available), as dbt does.
    fn link(&mut self, name: &str, dir: &Path) -> Result<String, Diagnostic> {
        let target = std::fs::canonicalize(dir)
            .map_err(|_| Diagnostic::error(Code::BadLocalPackage, format!("local package `{}` does not exist", dir.display())))?;
        if !target.join("dbt_project.yml").is_file() {
            return Err(Diagnostic::error(Code::BadLocalPackage, format!("local package `{}` has no dbt_project.yml", dir.display())));
        }
        link_or_copy(&target, &self.dir.join(name))
            .map_err(|e| Diagnostic::error(Code::PackageInstall, format!("cannot install {name}: {e}")))?;
        Ok(format!("local {}", dir.display()))
    }

    /// A hub package cannot be downloaded here; an installed copy of it is kept. Returns its name,
    /// staged directory and version.
    fn keep_hub(&mut self, source: &Source, name: Option<&str>) -> Option<(String, PathBuf, String)> {
        let name = name.map_or_else(|| source.name_hint(), str::to_string);
        let installed = self.install.join(&name);
        let doc = yaml::parse(&std::fs::read_to_string(installed.join("dbt_project.yml")).ok()?).ok()?;
        let version = doc.get("version").and_then(YNode::scalar_string).unwrap_or_default();
        let dest = self.dir.join(&name);
        copy_tree(&installed, &dest).ok()?;
        Some((name, dest, version))
    }

    /// Swaps the staged directory in for the installed one.
    fn publish(&mut self) -> Result<(), Diagnostics> {
        let _ = std::fs::remove_dir_all(self.dir.join(".fetch"));
        let old = self.dir.with_extension("kiln-old");
        let _ = std::fs::remove_dir_all(&old);
        let had_install = self.install.exists();
        if had_install {
            std::fs::rename(&self.install, &old).map_err(|e| io_error(&self.install, e))?;
        }
        if let Err(e) = std::fs::rename(&self.dir, &self.install) {
            if had_install {
                let _ = std::fs::rename(&old, &self.install);
            }
            return Err(io_error(&self.install, e));
        }
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn link_or_copy(src: &Path, dest: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        if std::os::unix::fs::symlink(src, dest).is_ok() {
            return Ok(());
        }
    }
    copy_tree(src, dest)
}

fn copy_tree(src: &Path, dest: &Path) -> std::io::Result<()> {
    for entry in walkdir::WalkDir::new(src) {
        let entry = entry.map_err(std::io::Error::other)?;
        let target = dest.join(entry.path().strip_prefix(src).unwrap_or(entry.path()));
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
