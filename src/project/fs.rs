//! The one file-system seam of project loading. [`OsFs`] reads the disk; [`MemFs`] holds a
//! project in memory for tests.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

pub trait Fs: Sync {
    fn read_to_string(&self, path: &Path) -> io::Result<String>;
    fn exists(&self, path: &Path) -> bool;
    fn is_dir(&self, path: &Path) -> bool;
    /// A file's size in bytes.
    fn size(&self, path: &Path) -> io::Result<u64> {
        std::fs::metadata(path).map(|m| m.len())
    }
    /// Every file below `dir` (recursively), sorted, relative paths joined onto `dir`.
    /// Hidden files and directories (starting with `.`) are skipped. A missing `dir` is empty.
    fn walk(&self, dir: &Path) -> Vec<PathBuf>;
}

pub struct OsFs;

/// Sorts in `Path` order (component by component) without re-parsing components at every
/// comparison: compared as bytes with separators as the lowest byte, which orders the same.
fn sort_paths(paths: &mut [PathBuf]) {
    paths.sort_by_cached_key(|p| {
        p.as_os_str().as_encoded_bytes().iter().map(|&b| if std::path::is_separator(b as char) { 0 } else { b }).collect::<Vec<u8>>()
    });
}

impl Fs for OsFs {
    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }
    fn walk(&self, dir: &Path) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = walkdir::WalkDir::new(dir)
            .follow_links(true)
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .map(|e| e.into_path())
            .collect();
        sort_paths(&mut out);
        out
    }
}

/// An in-memory project: path -> contents.
#[derive(Default)]
pub struct MemFs {
    pub files: BTreeMap<PathBuf, String>,
}

impl MemFs {
    pub fn new(root: &Path, files: &[(&str, &str)]) -> Self {
        MemFs { files: files.iter().map(|(p, c)| (root.join(p), (*c).to_string())).collect() }
    }
}

impl Fs for MemFs {
    fn size(&self, path: &Path) -> io::Result<u64> {
        self.read_to_string(path).map(|t| t.len() as u64)
    }
    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        self.files.get(path).cloned().ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    }
    fn exists(&self, path: &Path) -> bool {
        self.files.contains_key(path) || self.is_dir(path)
    }
    fn is_dir(&self, path: &Path) -> bool {
        self.files.keys().any(|p| p.starts_with(path) && p != path)
    }
    fn walk(&self, dir: &Path) -> Vec<PathBuf> {
        self.files
            .keys()
            .filter(|p| p.starts_with(dir))
            .filter(|p| !p.strip_prefix(dir).unwrap_or(p).components().any(|c| c.as_os_str().to_string_lossy().starts_with('.')))
            .cloned()
            .collect()
    }
}

/// [`OsFs`] that keeps what it read: a file is read again only when its size, modification time
/// or inode changed, or it was named in [`CachedFs::invalidate`] (file times are coarse: two
/// saves of the same length within a few milliseconds can share one). Watch mode reloads a project on
/// every save through one of these, so only the saved files are read again.
#[derive(Default)]
pub struct CachedFs {
    files: std::sync::Mutex<std::collections::HashMap<PathBuf, (Stamp, String)>>,
}

/// What says a file changed without reading it.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    /// Editors that save by renaming a new file over the old one give it a new inode.
    inode: u64,
}

impl CachedFs {
    /// Forgets `paths`, so the next read goes to the disk whatever the file's stamp says.
    pub fn invalidate<'a>(&self, paths: impl IntoIterator<Item = &'a Path>) {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        for p in paths {
            files.remove(p);
        }
    }
}

impl Fs for CachedFs {
    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        let meta = std::fs::metadata(path)?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        let stamp = Stamp { len: meta.len(), modified: meta.modified().ok(), inode };
        if let Some((s, text)) = self.files.lock().unwrap_or_else(|e| e.into_inner()).get(path)
            && *s == stamp
        {
            return Ok(text.clone());
        }
        let text = std::fs::read_to_string(path)?;
        self.files.lock().unwrap_or_else(|e| e.into_inner()).insert(path.to_path_buf(), (stamp, text.clone()));
        Ok(text)
    }
    fn exists(&self, path: &Path) -> bool {
        OsFs.exists(path)
    }
    fn is_dir(&self, path: &Path) -> bool {
        OsFs.is_dir(path)
    }
    fn walk(&self, dir: &Path) -> Vec<PathBuf> {
        OsFs.walk(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_sort_as_path_orders_them() {
        let mut paths: Vec<PathBuf> =
            ["m/a.b/c.sql", "m/a/b.sql", "m/a/b/c.sql", "m/ab.sql", "m/a-b.sql", "m/a.sql", "m/A.sql", "m/a/b.sql.bak", "n.sql"]
                .iter()
                .map(PathBuf::from)
                .collect();
        let mut expected = paths.clone();
        expected.sort();
        sort_paths(&mut paths);
        assert_eq!(paths, expected);
    }
}
