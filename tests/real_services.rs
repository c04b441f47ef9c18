//! The incidents replayed with real daemons: PostgreSQL 15, Redis and nginx
//! under supd (installed by ./test.sh as root; without them each test
//! prints a SKIP line).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

const PGBIN: &str = "/usr/lib/postgresql/15/bin";

/// A PostgreSQL cluster in `dir` owned by postgres.
fn initdb(data: &Path) {
    std::fs::create_dir_all(data).unwrap();
    run_ok(Command::new("chown").args(["postgres:postgres"]).arg(data));
    run_ok(
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{PGBIN}/initdb"))
            .args(["-D"])
            .arg(data)
            .args(["-U", "postgres", "--auth=trust", "-N"]),
    );
}

struct Pg {
    data: PathBuf,
    sock: PathBuf,
    port: u16,
}

impl Pg {
    fn unit(&self, extra: &str) -> String {
        format!(
            r#"description = "PostgreSQL 15"
exec = ["{PGBIN}/postgres", "-D", "{data}", "-k", "{sock}", "-p", "{port}", "-c", "listen_addresses=", "-c", "dynamic_shared_memory_type=mmap"]
user = "postgres"
{extra}
[ready]
kind = "notify"
timeout = "60s"
[health]
exec = ["{PGBIN}/pg_isready", "-h", "{sock}", "-p", "{port}"]
interval = "2s"
timeout = "2s"
[restart]
policy = "always"
delay = "100ms"
max_delay = "1s"
burst = 10
interval = "1m"
[stop]
signal = "SIGINT"
timeout = "30s"
"#,
            data = self.data.display(),
            sock = self.sock.display(),
            port = self.port
        )
    }

    fn psql(&self, sql: &str) -> String {
        run_ok(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(format!("{PGBIN}/psql"))
                .arg("-h")
                .arg(&self.sock)
                .args(["-p", &self.port.to_string(), "-tA", "-c", sql]),
        )
        .trim()
        .to_string()
    }

    fn cluster_state(&self) -> String {
        let out = run_ok(Command::new(format!("{PGBIN}/pg_controldata")).arg(&self.data));
        out.lines()
            .find(|l| l.starts_with("Database cluster state:"))
            .unwrap_or("")
            .to_string()
    }
}

fn pg_in(dir: &Path) -> Pg {
    let sock = dir.join("pgsock");
    std::fs::create_dir_all(&sock).unwrap();
    run_ok(Command::new("chown").args(["postgres:postgres"]).arg(&sock));
    Pg {
        data: dir.join("pgdata"),
        sock,
        port: free_port(),
    }
}

/// The resurrected database (incident 1), replayed.
#[test]
fn maintenance_keeps_postgres_down_through_kill_and_reboot() {
    if !have("postgres_maintenance", &[&format!("{PGBIN}/postgres")]) {
        return;
    }
    let dir = TempDir::new("pg-maint");
    let pg = pg_in(dir.path());
    initdb(&pg.data);
    let mut supd = Supd::start("pgmaint", &[("postgres", &pg.unit(""))]);
    supd.wait_state("postgres", "running", Duration::from_secs(60));
    wait_for("postgres ready", Duration::from_secs(60), || {
        (supd.unit("postgres")["ready"] == true).then_some(())
    });
    pg.psql("create table t (id int); insert into t select generate_series(1, 500);");
    supd.ok(&[
        "maintenance",
        "on",
        "postgres",
        "--reason",
        "edit pg_hba by hand",
        "--holder",
        "dba",
    ]);
    // When the command returned, postgres was down and cleanly shut down.
    assert!(supd.unit("postgres")["pid"].is_null());
    assert!(
        !pg.data.join("postmaster.pid").exists(),
        "postmaster.pid left"
    );
    assert!(
        pg.cluster_state().contains("shut down"),
        "{}",
        pg.cluster_state()
    );
    // The maintenance step: edit files in the data directory.
    let conf = pg.data.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("\n# edited during maintenance\n");
    std::fs::write(&conf, text).unwrap();
    // Crash supd, start it again in a fresh namespace ("reboot").
    supd.kill9();
    supd.spawn(&Options::default());
    std::thread::sleep(Duration::from_secs(1));
    assert!(supd.unit("postgres")["pid"].is_null());
    assert!(
        !pg.data.join("postmaster.pid").exists(),
        "postgres ran during maintenance"
    );
    let r = supd.supctl(&["start", "postgres"]);
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("edit pg_hba by hand"));
    supd.ok(&["maintenance", "off", "postgres", "--holder", "dba"]);
    wait_for("postgres ready again", Duration::from_secs(60), || {
        (supd.unit("postgres")["ready"] == true).then_some(())
    });
    assert_eq!(pg.psql("select count(*) from t"), "500");
}

/// The service that started before its disk (incident 2), replayed.
#[test]
fn postgres_waits_for_its_disk_and_never_writes_underneath() {
    if !have(
        "postgres_disk",
        &[&format!("{PGBIN}/postgres"), "/sbin/mkfs.ext4"],
    ) {
        return;
    }
    let dir = TempDir::new("pg-disk");
    let img = dir.path().join("disk.img");
    let mnt = dir.path().join("srv-pg");
    std::fs::create_dir_all(&mnt).unwrap();
    run_ok(Command::new("truncate").args(["-s", "128M"]).arg(&img));
    run_ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img));
    let pg = Pg {
        data: mnt.join("data"),
        ..pg_in(dir.path())
    };
    // Prepare the cluster on the image in a throwaway mount namespace.
    run_ok(Command::new("unshare").args(["-m", "--propagation", "private", "sh", "-c"]).arg(format!(
        "mount -o loop {img} {mnt} && mkdir {mnt}/data && chown postgres:postgres {mnt}/data && runuser -u postgres -- {PGBIN}/initdb -D {mnt}/data -U postgres --auth=trust -N >/dev/null",
        img = img.display(),
        mnt = mnt.display()
    )));
    let unit = pg.unit(&format!(
        "[[mount]]\npath = \"{}\"\nfstype = \"ext4\"\noptions = [\"rw\"]",
        mnt.display()
    ));
    let supd = Supd::start("pgdisk", &[("postgres", &unit)]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(supd.state_of("postgres"), "waiting");
    assert!(supd.ok(&["why", "postgres"]).contains("not a mount point"));
    let mnt_s = mnt.display().to_string();
    let img_s = img.display().to_string();
    supd.in_ns_ok(&["mount", "-o", "loop", &img_s, &mnt_s]);
    wait_for("postgres ready", Duration::from_secs(60), || {
        (supd.unit("postgres")["ready"] == true).then_some(())
    });
    pg.psql("create table t (v text); insert into t values ('on the real disk');");
    // The directory under the mount point (what we see from outside the
    // namespace) stayed empty.
    assert!(
        std::fs::read_dir(&mnt).unwrap().next().is_none(),
        "wrote under the mount point"
    );
    // Lose the disk: postgres is stopped; it comes back with the disk.
    supd.in_ns_ok(&["umount", "-l", &mnt_s]);
    wait_for(
        "postgres stopped on disk loss",
        Duration::from_secs(30),
        || (supd.state_of("postgres") == "waiting").then_some(()),
    );
    supd.in_ns_ok(&["mount", "-o", "loop", &img_s, &mnt_s]);
    wait_for("postgres back", Duration::from_secs(60), || {
        (supd.unit("postgres")["ready"] == true).then_some(())
    });
    assert_eq!(pg.psql("select v from t"), "on the real disk");
    assert!(std::fs::read_dir(&mnt).unwrap().next().is_none());
}

fn redis_unit(port: u16, stamps: &Path, extra: &str) -> String {
    format!(
        r#"description = "Redis"
exec = ["/bin/sh", "-c", "date +%s%N >> {stamps}; exec /usr/bin/redis-server --port {port} --bind 127.0.0.1 --save '' --appendonly no"]
{extra}
[ready]
kind = "probe"
[health]
exec = ["/usr/bin/redis-cli", "-p", "{port}", "ping"]
interval = "1s"
timeout = "1s"
"#,
        stamps = stamps.display()
    )
}

/// Ready means ready (3); a clean shutdown keeps data, in order (5).
#[test]
fn appliance_starts_when_ready_and_shuts_down_in_order() {
    if !have(
        "appliance",
        &[
            &format!("{PGBIN}/postgres"),
            "/usr/bin/redis-server",
            "/usr/sbin/nginx",
        ],
    ) {
        return;
    }
    let dir = TempDir::new("appliance");
    let d = dir.path();
    let pg = pg_in(d);
    initdb(&pg.data);
    let (rport, aport, nport) = (free_port(), free_port(), free_port());
    let violations = d.join("violations");
    // The app checks its dependencies on its first line, then serves HTTP.
    let app_py = format!(
        r#"import socket, subprocess, time, http.server
ok_pg = subprocess.run(["runuser","-u","postgres","--","{PGBIN}/psql","-h","{sock}","-p","{pport}","-tAc","select 1"],capture_output=True).returncode == 0
s = socket.create_connection(("127.0.0.1",{rport})); s.sendall(b"PING\r\n"); ok_redis = s.recv(16).startswith(b"+PONG")
if not (ok_pg and ok_redis): open("{viol}","a").write("app started before its dependencies were ready\n")
open("{d}/app.ready","w").write(str(time.time_ns()))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"app ok\n")
    def log_message(self,*a): pass
http.server.HTTPServer(("127.0.0.1",{aport}),H).serve_forever()
"#,
        sock = pg.sock.display(),
        pport = pg.port,
        viol = violations.display(),
        d = d.display()
    );
    let app = format!(
        "exec = [\"python3\", \"-c\", {}]\nrequires = [\"postgres\", \"redis\"]\n[ready]\nkind = \"probe\"\n[health]\nhttp = \"http://127.0.0.1:{aport}/health\"\ninterval = \"1s\"\n",
        toml_str(&app_py)
    );
    let nginx_conf = d.join("nginx.conf");
    std::fs::write(
        &nginx_conf,
        format!(
            "pid {d}/nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{\n access_log off;\n client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp; uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n server {{ listen 127.0.0.1:{nport}; location / {{ proxy_pass http://127.0.0.1:{aport}; }} }}\n}}\n",
            d = d.display()
        ),
    )
    .unwrap();
    let nginx = format!(
        "exec = [\"/bin/sh\", \"-c\", {}]\nrequires = [\"app\"]\nreload_signal = \"SIGHUP\"\n[stop]\nsignal = \"SIGQUIT\"\n",
        toml_str(&format!(
            "date +%s%N > {d}/nginx.start; exec /usr/sbin/nginx -g 'daemon off;' -c {}",
            nginx_conf.display(),
            d = d.display()
        ))
    );
    let mut supd = Supd::start(
        "appliance",
        &[
            ("postgres", &pg.unit("")),
            ("redis", &redis_unit(rport, &d.join("redis.starts"), "")),
            ("app", &app),
            ("nginx", &nginx),
        ],
    );
    supd.wait_state("nginx", "running", Duration::from_secs(90));
    assert!(
        !violations.exists(),
        "{}",
        std::fs::read_to_string(&violations).unwrap_or_default()
    );
    // A stamp file can exist a moment before its content: wait for it.
    let stamp = |name: &str| -> u128 {
        wait_for(name, Duration::from_secs(10), || {
            std::fs::read_to_string(d.join(name))
                .ok()?
                .trim()
                .parse()
                .ok()
        })
    };
    let app_ready = stamp("app.ready");
    let nginx_start = stamp("nginx.start");
    assert!(
        nginx_start > app_ready,
        "nginx started before the app answered"
    );
    // Through nginx to the app.
    let body = run_ok(Command::new("python3").args([
        "-c",
        &format!("import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:{nport}/').read().decode())"),
    ]));
    assert!(body.contains("app ok"), "{body}");
    supd.ok(&["reload-unit", "nginx"]);
    // 5. 1000 committed rows survive an ordered shutdown.
    pg.psql("create table rows (id int); insert into rows select generate_series(1, 1000);");
    supd.signal(Signal::SIGTERM);
    let st = supd.wait_exit(Duration::from_secs(60));
    assert!(st.success(), "{st}");
    let log = supd.log_text();
    let pos = |u: &str| {
        log.lines()
            .position(|l| {
                l.contains("stopped (system shutdown)") && l.contains(&format!("unit={u}"))
            })
            .unwrap_or_else(|| panic!("no stop line for {u} in:\n{log}"))
    };
    assert!(pos("nginx") < pos("app"), "nginx must stop before app");
    assert!(pos("app") < pos("postgres") && pos("app") < pos("redis"));
    assert!(
        pg.cluster_state().contains("shut down"),
        "{}",
        pg.cluster_state()
    );
    supd.spawn(&Options::default());
    wait_for(
        "postgres ready after restart",
        Duration::from_secs(60),
        || (supd.unit("postgres")["ready"] == true).then_some(()),
    );
    assert_eq!(pg.psql("select count(*) from rows"), "1000");
}

/// No storm (incident 4): a crash-looping Redis backs off, fails, and
/// comes back when an operator starts it.
#[test]
fn redis_crash_loop_backs_off_and_fails() {
    if !have("redis_crash_loop", &["/usr/bin/redis-server"]) {
        return;
    }
    let dir = TempDir::new("redis-loop");
    let port = free_port();
    let stamps = dir.path().join("starts");
    let unit = redis_unit(
        port,
        &stamps,
        "[restart]\npolicy = \"always\"\ndelay = \"200ms\"\nmax_delay = \"2s\"\nburst = 3\ninterval = \"1m\"",
    );
    let supd = Supd::start("redisloop", &[("redis", &unit)]);
    for i in 0..4 {
        wait_for("redis ready", Duration::from_secs(20), || {
            let u = supd.unit("redis");
            (u["ready"] == true).then_some(())
        });
        let pid = supd.unit("redis")["pid"].as_i64().unwrap().to_string();
        // pids in status are supd's namespace pids: kill from inside it.
        supd.in_ns_ok(&["kill", "-9", &pid]);
        if i < 3 {
            wait_for("redis restarting", Duration::from_secs(10), || {
                let s = supd.state_of("redis");
                (s == "backoff" || s == "starting").then_some(())
            });
        }
    }
    supd.wait_state("redis", "failed", Duration::from_secs(20));
    let starts: Vec<u128> = std::fs::read_to_string(&stamps)
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(starts.len(), 4, "first start + burst restarts: {starts:?}");
    let gaps: Vec<f64> = starts
        .windows(2)
        .map(|w| (w[1] - w[0]) as f64 / 1e6)
        .collect();
    eprintln!("redis restart gaps (ms, include readiness wait): {gaps:?}");
    supd.ok(&["start", "redis"]);
    wait_for("redis back", Duration::from_secs(20), || {
        (supd.unit("redis")["ready"] == true).then_some(())
    });
}
