//! An embedded Postgres for when no `DATABASE_URL` is given: ExecOps creates a cluster
//! under its data directory on first run, starts the machine's own `postgres` as a child
//! process, and stops it on the way out. The server is told to stop when ExecOps dies, even
//! by SIGKILL, so no postgres process is left behind and the next start finds its data.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The superuser ExecOps creates in its own cluster.
const SUPERUSER: &str = "execops";
const HOW_TO_FIX: &str = "install PostgreSQL (e.g. `apt-get install postgresql`), \
     set DATABASE_URL to a Postgres you run, or start the bundled one with `docker compose up -d db`";

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("no PostgreSQL server binaries (initdb, postgres) were found on PATH or under /usr/lib/postgresql/*/bin; {HOW_TO_FIX}")]
    NoBinaries,
    #[error("ExecOps runs as root, and PostgreSQL refuses to: it needs a `postgres` OS user to run the server as ({0})")]
    NoPostgresUser(String),
    #[error("the postgres OS user cannot enter {0}: choose an EXECOPS_DATA_DIR whose parent directories it may enter (e.g. /var/lib/execops)")]
    Unreachable(PathBuf),
    #[error("{what} failed: {detail}")]
    Failed { what: String, detail: String },
    #[error("postgres could not listen on port {0}: another process took it")]
    PortTaken(u16),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> EmbeddedError {
    let context = context.into();
    move |source| EmbeddedError::Io { context, source }
}

/// Settings for one embedded cluster.
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// Holds `pgdata/` (the cluster), `postgres.log` and the superuser's password.
    pub data_dir: PathBuf,
    /// Extra `-c name=value` server settings, e.g. `fsync=off` for throwaway test clusters.
    pub settings: Vec<(String, String)>,
    /// The loopback port to listen on; `None` picks a free one at each start.
    pub port: Option<u16>,
}

impl EmbeddedOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            settings: Vec::new(),
            port: None,
        }
    }

    /// Settings for a cluster whose data may be lost: faster, not crash-safe.
    pub fn throwaway(mut self) -> Self {
        for (name, value) in [
            ("fsync", "off"),
            ("synchronous_commit", "off"),
            ("full_page_writes", "off"),
            ("max_connections", "300"),
        ] {
            self.settings.push((name.into(), value.into()));
        }
        self
    }
}

/// A running cluster, stopped when this is dropped (or by [`EmbeddedPostgres::stop`]).
pub struct EmbeddedPostgres {
    port: u16,
    password: String,
    pid: i32,
    data_dir: PathBuf,
    exited: Option<std::sync::Mutex<mpsc::Receiver<String>>>,
    supervisor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedPostgres")
            .field("port", &self.port)
            .field("pid", &self.pid)
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

struct RunAs {
    uid: u32,
    gid: u32,
}

impl EmbeddedPostgres {
    /// Creates the cluster if it does not exist yet, starts it on a free loopback port and
    /// waits until it accepts connections. Blocking: call it before serving, or from a
    /// blocking context.
    pub fn start(options: &EmbeddedOptions) -> Result<Self, EmbeddedError> {
        let bin = find_binaries().ok_or(EmbeddedError::NoBinaries)?;
        let run_as = run_as()?;
        let data_dir = absolute(&options.data_dir)?;
        fs::create_dir_all(&data_dir).map_err(io(format!("creating {}", data_dir.display())))?;
        fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o700))
            .map_err(io(format!("securing {}", data_dir.display())))?;
        // The directory the server's files live in. As root the server runs as `postgres`,
        // which must be able to enter it; a data directory under a private home (say
        // /root) is not, so the cluster then lives under /var/lib/execops instead.
        let home = match &run_as {
            None => data_dir.clone(),
            Some(user) => {
                let home = if reachable(&data_dir) {
                    data_dir.clone()
                } else {
                    let home = fallback_home(&data_dir);
                    tracing::warn!(
                        data_dir = %data_dir.display(),
                        cluster = %home.display(),
                        "the postgres OS user cannot enter the data directory; the cluster lives elsewhere"
                    );
                    home
                };
                if !reachable(&home) {
                    return Err(EmbeddedError::Unreachable(home));
                }
                fs::create_dir_all(&home).map_err(io(format!("creating {}", home.display())))?;
                std::os::unix::fs::chown(&home, Some(user.uid), Some(user.gid))
                    .map_err(io(format!("handing {} to postgres", home.display())))?;
                home
            }
        };
        let pgdata = home.join("pgdata");
        let password_file = data_dir.join("superuser-password");
        if !pgdata.join("PG_VERSION").exists() {
            init_cluster(&bin, &run_as, &home, &pgdata, &password_file)?;
        }
        let password = fs::read_to_string(&password_file)
            .map_err(io(format!("reading {}", password_file.display())))?
            .trim()
            .to_string();

        // Another ExecOps process (a second `serve`, or a CLI command beside a running server)
        // already runs this cluster: use it, and leave stopping it to its owner.
        if let Some((pid, port)) = running_server(&pgdata) {
            if is_ready(&bin, port) {
                tracing::info!(
                    port,
                    pid,
                    "using the embedded postgres another process started"
                );
                return Ok(Self {
                    port,
                    password,
                    pid,
                    data_dir,
                    exited: None,
                    supervisor: None,
                });
            }
        }

        let launch =
            |port| Self::launch(options, &bin, &run_as, &pgdata, &data_dir, &password, port);
        match options.port {
            Some(port) => launch(port),
            None => on_a_free_port(free_port, launch),
        }
    }

    /// Runs the cluster's server on `port` and waits until it accepts connections.
    fn launch(
        options: &EmbeddedOptions,
        bin: &Path,
        run_as: &Option<RunAs>,
        pgdata: &Path,
        data_dir: &Path,
        password: &str,
        port: u16,
    ) -> Result<Self, EmbeddedError> {
        let log_path = data_dir.join("postgres.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(format!("opening {}", log_path.display())))?;
        let log_err = log.try_clone().map_err(io("duplicating the log handle"))?;
        // Where this run's lines start.
        let log_start = log
            .metadata()
            .map_err(io(format!("reading {}", log_path.display())))?
            .len();

        let mut command = Command::new(bin.join("postgres"));
        command
            .arg("-D")
            .arg(pgdata)
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "unix_socket_directories="])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Its own process group: a Ctrl-C in the terminal reaches ExecOps, which stops
            // the server only after HTTP has drained.
            .process_group(0);
        for (name, value) in &options.settings {
            command.args(["-c", &format!("{name}={value}")]);
        }
        if let Some(user) = run_as {
            command.uid(user.uid).gid(user.gid);
        }
        die_with_parent(&mut command);

        // The server is told to stop when the thread that started it ends, so that thread
        // waits on it for as long as it runs.
        let (started_tx, started_rx) = mpsc::channel::<Result<i32, std::io::Error>>();
        let (exited_tx, exited_rx) = mpsc::channel::<String>();
        let supervisor = std::thread::Builder::new()
            .name("postgres".into())
            .spawn(move || match command.spawn() {
                Ok(mut child) => {
                    let _ = started_tx.send(Ok(child.id() as i32));
                    let status = child
                        .wait()
                        .map(|s| s.to_string())
                        .unwrap_or_else(|e| e.to_string());
                    let _ = exited_tx.send(status);
                }
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                }
            })
            .map_err(io("starting the postgres supervisor thread"))?;
        let pid = started_rx
            .recv()
            .map_err(|_| failed("starting postgres", "the supervisor thread ended"))?
            .map_err(io(format!("running {}", bin.join("postgres").display())))?;

        let mut cluster = Self {
            port,
            password: password.to_string(),
            pid,
            data_dir: data_dir.to_path_buf(),
            exited: Some(std::sync::Mutex::new(exited_rx)),
            supervisor: Some(supervisor),
        };
        cluster.wait_until_ready(bin, &log_path, log_start)?;
        tracing::info!(port, pid, data_dir = %data_dir.display(), "embedded postgres started");
        Ok(cluster)
    }

    fn wait_until_ready(
        &mut self,
        bin: &Path,
        log_path: &Path,
        log_start: u64,
    ) -> Result<(), EmbeddedError> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let status = self
                .exited
                .as_ref()
                .and_then(|rx| rx.lock().ok()?.try_recv().ok());
            if let Some(status) = status {
                self.exited = None;
                if logged_since(log_path, log_start).contains("Address already in use") {
                    return Err(EmbeddedError::PortTaken(self.port));
                }
                return Err(failed(
                    "starting postgres",
                    format!("it exited ({status}); its log says:\n{}", tail(log_path)),
                ));
            }
            if is_ready(bin, self.port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(failed(
                    "starting postgres",
                    format!("not ready after 120 s; its log says:\n{}", tail(log_path)),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A connection URL for `database` as the cluster's superuser.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// Fast shutdown: open sessions are ended, everything committed is kept.
    pub fn stop(mut self) -> Result<(), EmbeddedError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), EmbeddedError> {
        let Some(exited) = self.exited.take() else {
            return Ok(());
        };
        let exited = exited
            .into_inner()
            .map_err(|_| failed("stopping postgres", "its supervisor panicked"))?;
        signal(self.pid, libc::SIGINT);
        let result = match exited.recv_timeout(Duration::from_secs(60)) {
            Ok(_) => Ok(()),
            Err(_) => {
                signal(self.pid, libc::SIGQUIT);
                let _ = exited.recv_timeout(Duration::from_secs(10));
                Err(failed("stopping postgres", "it did not stop within 60 s"))
            }
        };
        if let Some(supervisor) = self.supervisor.take() {
            let _ = supervisor.join();
        }
        tracing::info!(pid = self.pid, "embedded postgres stopped");
        result
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown() {
            tracing::warn!(%error, "embedded postgres did not stop cleanly");
        }
    }
}

fn is_ready(bin: &Path, port: u16) -> bool {
    Command::new(bin.join("pg_isready"))
        .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", SUPERUSER, "-d", "postgres"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The pid and port of a live server on `pgdata`, from its `postmaster.pid`.
fn running_server(pgdata: &Path) -> Option<(i32, u16)> {
    let text = fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    let mut lines = text.lines();
    let pid: i32 = lines.next()?.trim().parse().ok()?;
    let port: u16 = lines.nth(2)?.trim().parse().ok()?;
    Path::new("/proc")
        .join(pid.to_string())
        .exists()
        .then_some((pid, port))
}

fn failed(what: &str, detail: impl Into<String>) -> EmbeddedError {
    EmbeddedError::Failed {
        what: what.into(),
        detail: detail.into(),
    }
}

#[allow(unsafe_code)]
fn signal(pid: i32, signal: libc::c_int) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Asks the kernel to send the child SIGINT (Postgres's fast shutdown) when the thread that
/// started it dies, so a killed ExecOps does not leave its server running.
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and calls only prctl, getppid
    // and _exit, which are async-signal-safe. std sets the uid/gid before running it, so
    // the death signal is not cleared by the change of credentials.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// The directory holding `initdb` and `postgres`: PATH first, then Debian's layout, newest
/// major version first.
pub fn find_binaries() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").into_iter().flat_map(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("initdb"))
            .collect::<Vec<_>>()
    });
    let mut debian: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin").join("initdb"))
        .collect();
    debian.sort_by_key(|path| {
        std::cmp::Reverse(
            path.components()
                .nth(4)
                .and_then(|c| c.as_os_str().to_str()?.parse::<u32>().ok())
                .unwrap_or(0),
        )
    });
    on_path
        .chain(debian)
        .filter_map(|initdb| fs::canonicalize(initdb).ok())
        .filter_map(|initdb| initdb.parent().map(Path::to_path_buf))
        .find(|dir| dir.join("postgres").is_file() && dir.join("pg_isready").is_file())
}

/// Who runs the server: ourselves, or the `postgres` user when we are root.
fn run_as() -> Result<Option<RunAs>, EmbeddedError> {
    let euid = fs::metadata("/proc/self")
        .map(|m| m.uid())
        .map_err(io("reading /proc/self"))?;
    if euid != 0 {
        return Ok(None);
    }
    let id = |flag: &str| -> Result<u32, EmbeddedError> {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .map_err(|e| EmbeddedError::NoPostgresUser(e.to_string()))?;
        if !out.status.success() {
            return Err(EmbeddedError::NoPostgresUser(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| EmbeddedError::NoPostgresUser("`id` gave no number".into()))
    };
    Ok(Some(RunAs {
        uid: id("-u")?,
        gid: id("-g")?,
    }))
}

fn absolute(path: &Path) -> Result<PathBuf, EmbeddedError> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    Ok(std::env::current_dir()
        .map_err(io("reading the current directory"))?
        .join(path))
}

/// Every parent of `dir` must let others pass, or the server cannot open its data.
fn reachable(dir: &Path) -> bool {
    dir.ancestors().skip(1).all(|ancestor| {
        fs::metadata(ancestor)
            .map(|meta| meta.mode() & 0o001 != 0)
            .unwrap_or(true)
    })
}

/// Where the cluster for `data_dir` lives when the server's user cannot enter `data_dir`:
/// one directory per data directory, so two data directories never share a cluster.
pub fn fallback_home(data_dir: &Path) -> PathBuf {
    use sha2::{Digest, Sha256};
    let digest = hex::encode(Sha256::digest(data_dir.as_os_str().as_encoded_bytes()));
    PathBuf::from("/var/lib/execops/clusters").join(&digest[..16])
}

fn init_cluster(
    bin: &Path,
    run_as: &Option<RunAs>,
    home: &Path,
    pgdata: &Path,
    password_file: &Path,
) -> Result<(), EmbeddedError> {
    if pgdata.exists() {
        // A half-made cluster from an interrupted first run: start again.
        fs::remove_dir_all(pgdata).map_err(io(format!("removing {}", pgdata.display())))?;
    }
    let password = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    // initdb reads the password from a file the server's user can read; it is removed after.
    let pwfile = home.join("initdb-pwfile");
    write_private(&pwfile, &password)?;
    if let Some(user) = run_as {
        std::os::unix::fs::chown(&pwfile, Some(user.uid), Some(user.gid))
            .map_err(io("handing the password file to postgres"))?;
    }
    let mut command = Command::new(bin.join("initdb"));
    command
        .arg("-D")
        .arg(pgdata)
        .args(["-U", SUPERUSER, "--auth=scram-sha-256", "--encoding=UTF8"])
        .args(["--no-locale", "--no-instructions"])
        .arg(format!("--pwfile={}", pwfile.display()));
    if let Some(user) = run_as {
        command.uid(user.uid).gid(user.gid);
    }
    let output = command.output();
    let _ = fs::remove_file(&pwfile);
    let output = output.map_err(io(format!("running {}", bin.join("initdb").display())))?;
    if !output.status.success() {
        let _ = fs::remove_dir_all(pgdata);
        return Err(failed(
            "initdb",
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ));
    }
    write_private(password_file, &password)?;
    tracing::info!(pgdata = %pgdata.display(), "created an embedded postgres cluster");
    Ok(())
}

fn write_private(path: &Path, contents: &str) -> Result<(), EmbeddedError> {
    let mut file = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(format!("writing {}", path.display())))?;
    file.write_all(contents.as_bytes())
        .map_err(io(format!("writing {}", path.display())))
}

fn free_port() -> Result<u16, EmbeddedError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io("finding a free port"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(io("finding a free port"))
}

/// `launch` on a port from `ports`, and on another while the one chosen turns out taken (by
/// another process, between choosing it and binding it), up to five more times.
fn on_a_free_port<T>(
    mut ports: impl FnMut() -> Result<u16, EmbeddedError>,
    mut launch: impl FnMut(u16) -> Result<T, EmbeddedError>,
) -> Result<T, EmbeddedError> {
    let mut retries = 5;
    loop {
        match launch(ports()?) {
            Err(EmbeddedError::PortTaken(port)) if retries > 0 => {
                tracing::warn!(
                    port,
                    "the port chosen for postgres was taken; trying another"
                );
                retries -= 1;
            }
            result => return result,
        }
    }
}

/// What was written to the log at `path` after its first `start` bytes.
fn logged_since(path: &Path, start: u64) -> String {
    let bytes = fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(bytes.get(start as usize..).unwrap_or_default()).into_owned()
}

fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_traded_for_another_five_times_at_most() {
        let mut next = 40_000;
        let mut ports = || {
            next += 1;
            Ok(next)
        };
        // Taken twice, then free.
        let started = on_a_free_port(&mut ports, |port| match port {
            40_001 | 40_002 => Err(EmbeddedError::PortTaken(port)),
            port => Ok(port),
        });
        assert!(matches!(started, Ok(40_003)), "{started:?}");

        let mut tried = vec![];
        let never = on_a_free_port(&mut ports, |port| {
            tried.push(port);
            Err::<u16, _>(EmbeddedError::PortTaken(port))
        });
        assert!(
            matches!(never, Err(EmbeddedError::PortTaken(40_009))),
            "{never:?}"
        );
        assert_eq!(tried.len(), 6, "the first try and five more");

        // Anything else is not a matter of ports.
        let mut tries = 0;
        let other = on_a_free_port(&mut ports, |_| {
            tries += 1;
            Err::<u16, _>(failed("starting postgres", "it exited"))
        });
        assert!(
            matches!(other, Err(EmbeddedError::Failed { .. })),
            "{other:?}"
        );
        assert_eq!(tries, 1);
    }
}
