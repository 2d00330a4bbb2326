//! Errors as data.
//!
//! Every problem a user can cause is a [`Diagnostic`]: a stable [`Code`], a severity, a message,
//! labels pointing into the user's files, notes and a hint. Lower layers return diagnostics; only
//! the CLI renders them (see [`render`]). Nothing in this module prints.

pub mod render;

use std::fmt;
use std::sync::Arc;

/// How bad a diagnostic is. Errors make the command exit 1; warnings are printed only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

macro_rules! codes {
    ($($(#[doc = $doc:literal])* $name:ident = $code:literal,)*) => {
        /// Stable diagnostic codes, grouped by stage: `E1xx` project and YAML, `E2xx` Jinja,
        /// `E3xx` graph and selection, `E4xx` SQL, `E5xx` profiles and packages, `E6xx` a node that
        /// failed while it ran.
        /// Each code has a broken project under `tests/fixtures/broken/` that triggers it.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code { $($(#[doc = $doc])* $name,)* }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$name,)*];
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$name => $code,)* }
            }
        }
    };
}

codes! {
    /// A file could not be read.
    Io = "E100",
    /// The YAML of a file does not parse.
    YamlSyntax = "E101",
    /// No `dbt_project.yml` in the project directory.
    NoProject = "E102",
    /// A required key is missing (e.g. `name` in `dbt_project.yml`).
    MissingKey = "E103",
    /// A key kiln (and dbt) does not know.
    UnknownKey = "E104",
    /// A value has the wrong type or shape.
    InvalidValue = "E105",
    /// Properties YAML: a `version:` other than 2.
    PropertiesVersion = "E106",
    /// Two resources share a name (and package).
    DuplicateResource = "E107",
    /// Properties YAML describes a model, seed or snapshot that does not exist.
    PatchTargetMissing = "E108",
    /// `--vars` is not a YAML/JSON mapping.
    BadCliVars = "E109",
    /// A project name that is not a valid identifier.
    BadProjectName = "E110",
    /// A `{% docs %}` block referenced by `doc()` does not exist.
    MissingDoc = "E111",
    /// A seed file is not readable as CSV (header).
    SeedHeader = "E112",
    /// An invalid materialization or config value.
    InvalidConfig = "E113",
    /// A unit test names a model or input that does not exist.
    UnitTestTarget = "E114",
    /// A generic test that does not exist.
    UnknownTest = "E115",
    /// (warning) A `materialized` value kiln does not build and no macro of the project defines:
    /// that node fails when it runs.
    UnknownMaterialization = "E116",
    /// (warning) An `incremental_strategy` the target does not have and no macro defines: that
    /// node fails when it runs incrementally.
    UnknownStrategy = "E117",
    /// (warning) A config the target does not honour (`grants`, `partition_by`, ...).
    ConfigNotHonoured = "E118",
    /// The Jinja syntax of a file is invalid.
    JinjaSyntax = "E201",
    /// Jinja referenced an undefined variable or attribute.
    JinjaUndefined = "E202",
    /// `var()` of a variable that is not defined.
    MissingVar = "E203",
    /// `env_var()` of an unset variable with no default.
    MissingEnvVar = "E204",
    /// `exceptions.raise_compiler_error` was called.
    CompilerError = "E205",
    /// Any other error while rendering Jinja.
    JinjaRender = "E206",
    /// `config.require()` of a config that is not set.
    MissingConfig = "E207",
    /// A macro (or an `adapter.dispatch` target) that does not exist.
    MissingMacro = "E208",
    /// `ref()` or `source()` called with the wrong arguments.
    BadRefArgs = "E209",
    /// Two macros with the same name in one package.
    DuplicateMacro = "E210",
    /// `env_var('DBT_ENV_SECRET_...')` outside profiles.yml, packages.yml and hooks.
    SecretEnvVar = "E211",
    /// `ref()` to a model that does not exist.
    MissingRef = "E301",
    /// `source()` to a source that does not exist.
    MissingSource = "E302",
    /// The dependency graph has a cycle.
    Cycle = "E303",
    /// A selector expression that does not parse or names an unknown method.
    BadSelector = "E304",
    /// `ref()` to a disabled model.
    DisabledRef = "E305",
    /// `--selector NAME` not found in `selectors.yml`.
    UnknownSelector = "E306",
    /// A test attached to a node that does not exist.
    TestTargetMissing = "E307",
    /// `--state` names a directory without a readable `manifest.json`.
    StateManifest = "E308",
    /// A compiled model is not valid SQL in the target's dialect.
    SqlSyntax = "E401",
    /// A model's compiled SQL is empty.
    EmptyModel = "E402",
    /// (warning) A model calls a function the embedded engine does not have.
    UnknownFunction = "E403",
    /// No `profiles.yml` entry for the project's profile.
    ProfileNotFound = "E501",
    /// The target does not exist in the profile.
    TargetNotFound = "E502",
    /// A profile or target is malformed (missing `type`, unknown adapter, ...).
    BadProfile = "E503",
    /// A hub package that is not installed: kiln cannot reach the dbt hub.
    RemotePackage = "E504",
    /// A local package path that does not exist or holds no `dbt_project.yml`.
    BadLocalPackage = "E505",
    /// A package is declared but not installed (run `kiln deps`).
    PackageNotInstalled = "E506",
    /// `require-dbt-version` or another project-level setting kiln cannot honour.
    Unsupported = "E507",
    /// The target's warehouse cannot be reached (refused, wrong password, missing database).
    Connection = "E508",
    /// Another kiln process is writing the local warehouse (one writer at a time).
    WarehouseBusy = "E509",
    /// (warning) A git package follows a branch (or the default branch), not a tag or commit.
    UnpinnedPackage = "E510",
    /// `kiln deps` could not fetch or install a package (git failed, revision or subdirectory
    /// missing, two packages with one name); nothing was installed.
    PackageInstall = "E511",
    /// A node's SQL failed in the warehouse.
    QueryFailed = "E601",
    /// A new table version breaks a contract constraint; the previous version is kept.
    ContractViolation = "E602",
    /// The connection to the warehouse was lost during a node.
    ConnectionLost = "E603",
    /// The run was interrupted while the node ran; nothing of it was published.
    Cancelled = "E604",
    /// The node's materialization or incremental strategy is one the target cannot build.
    NotBuildable = "E605",
    /// A node's `pre-hook` or `post-hook` failed.
    HookFailed = "E606",
    /// A unit test could not run: a mock, a given/expect block, or the model's SQL on the mocks.
    UnitTestError = "E607",
    /// A model names a column none of its inputs has (static analysis, before anything runs).
    UnknownColumn = "E701",
    /// A model names an unqualified column more than one of its inputs has.
    AmbiguousColumn = "E702",
    /// (warning, `static_analysis: strict`) kiln cannot tell a model's columns without running it.
    Untyped = "E703",
    /// A model's inferred columns differ from its enforced contract (names; types on the
    /// embedded engine).
    ContractMismatch = "E704",
    /// A model calls a function the target's SQL dialect does not have, whose name is a
    /// misspelling of one it has.
    UnknownDialectFunction = "E705",
    /// A model calls a function of the target's dialect with a number of arguments it does
    /// not take.
    ArgumentCount = "E706",
    /// A model combines values of types the target's SQL does not combine without a cast
    /// (compared, in `union` branches, `coalesce`/`case` branches, arithmetic).
    TypeMismatch = "E707",
    /// A model selects a column that is neither grouped nor aggregated.
    NotGrouped = "E708",
    /// A unit test's `given` rows name a column its input does not have.
    UnitTestColumn = "E709",
    /// A model reads a relation that is neither a CTE, a `ref`, a `source` nor in the warehouse.
    UnknownRelation = "E710",
    /// kiln itself went wrong: a bug to report (exit 2), e.g. a build plan that could not finish.
    Internal = "E900",
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A file a label points into. `path` is what the user sees (relative to the project root);
/// `text` is the file's contents, so a diagnostic renders on its own.
#[derive(Clone, Debug)]
pub struct SourceText {
    pub path: String,
    pub text: Arc<str>,
}

impl SourceText {
    pub fn new(path: impl Into<String>, text: impl Into<Arc<str>>) -> Self {
        SourceText { path: path.into(), text: text.into() }
    }
}

/// A position in a file: 1-based line and column (in characters), and the length to underline.
#[derive(Clone, Debug)]
pub struct Label {
    pub source: SourceText,
    pub line: usize,
    pub col: usize,
    pub len: usize,
    pub text: String,
}

impl Label {
    pub fn new(source: SourceText, line: usize, col: usize, len: usize, text: impl Into<String>) -> Self {
        Label { source, line: line.max(1), col: col.max(1), len: len.max(1), text: text.into() }
    }

    /// A label from a byte offset into `source.text`.
    pub fn at_offset(source: SourceText, offset: usize, len: usize, text: impl Into<String>) -> Self {
        let (line, col) = line_col(&source.text, offset);
        let len = source.text.get(offset..offset + len).map_or(len, |s| s.chars().count());
        Label::new(source, line, col, len, text)
    }
}

/// 1-based (line, column-in-chars) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let mut offset = offset;
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// A problem in the user's project.
#[derive(Clone, Debug)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    pub message: String,
    /// The first label is the primary location.
    pub labels: Vec<Label>,
    /// A file the diagnostic is about when there is no precise position.
    pub file: Option<String>,
    pub notes: Vec<String>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(code: Code, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            severity: Severity::Error,
            message: message.into(),
            labels: Vec::new(),
            file: None,
            notes: Vec::new(),
            help: None,
        }
    }

    pub fn warning(code: Code, message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Warning, ..Diagnostic::error(code, message) }
    }

    pub fn with_label(mut self, label: Label) -> Self {
        self.labels.push(label);
        self
    }

    pub fn with_file(mut self, file: impl Into<String>) -> Self {
        self.file = Some(file.into());
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn with_help_opt(mut self, help: Option<String>) -> Self {
        if help.is_some() {
            self.help = help;
        }
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The file this diagnostic points at, if any.
    pub fn path(&self) -> Option<&str> {
        self.labels.first().map(|l| l.source.path.as_str()).or(self.file.as_deref())
    }

    /// The 1-based line this diagnostic points at, if any.
    pub fn line(&self) -> Option<usize> {
        self.labels.first().map(|l| l.line)
    }

    fn sort_key(&self) -> (String, usize, usize, &'static str, String) {
        let (line, col) = self.labels.first().map_or((0, 0), |l| (l.line, l.col));
        (self.path().unwrap_or("").to_string(), line, col, self.code.as_str(), self.message.clone())
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&render::human(self, false))
    }
}

/// Everything a command found wrong, in a deterministic order.
#[derive(Clone, Debug, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }
    pub fn extend(&mut self, other: impl IntoIterator<Item = Diagnostic>) {
        self.0.extend(other);
    }
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }
    pub fn error_count(&self) -> usize {
        self.0.iter().filter(|d| d.is_error()).count()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Sorts by file, line, code; drops exact duplicates (the same problem found twice).
    pub fn sort(&mut self) {
        self.0.sort_by_cached_key(Diagnostic::sort_key);
        self.0.dedup_by(|a, b| a.sort_key() == b.sort_key());
    }
    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}

/// The closest name to `wanted` among `candidates`, for "did you mean" hints.
pub fn closest<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut scored: Vec<(f64, &str)> =
        candidates.into_iter().map(|c| (strsim::jaro_winkler(wanted, c), c)).filter(|(s, _)| *s > 0.8).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(3).map(|(_, c)| c).collect()
}

/// "did you mean `a`, `b`?" or None.
pub fn did_you_mean<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let found = closest(wanted, candidates);
    if found.is_empty() {
        None
    } else {
        let list: Vec<String> = found.iter().map(|c| format!("`{c}`")).collect();
        Some(format!("did you mean {}?", list.join(", ")))
    }
}
