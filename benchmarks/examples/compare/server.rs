//! The child-process server: this binary re-executed with `--server`, driven over its stdin.

use super::*;

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) stdin: Option<ChildStdin>,
    pub(crate) stdout: BufReader<ChildStdout>,
    pub(crate) http: u16,
    pub(crate) slow: u16,
    pub(crate) ws: u16,
}

/// TCP connections accepted per listener.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Accepted {
    pub(crate) http: usize,
    pub(crate) slow: usize,
    pub(crate) ws: usize,
}

impl Server {
    pub(crate) fn start() -> Server {
        let exe = std::env::current_exe().expect("current exe");
        let mut child = Command::new(exe)
            .arg("--server")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the server child");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("child stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("ports line");
        let ports: Vec<u16> = line
            .split_whitespace()
            .skip(1)
            .map(|p| p.parse().expect("port"))
            .collect();
        assert_eq!(ports.len(), 3, "bad ports line {line:?}");
        Server {
            child,
            stdin,
            stdout,
            http: ports[0],
            slow: ports[1],
            ws: ports[2],
        }
    }

    pub(crate) fn accepted(&mut self) -> Accepted {
        let stdin = self.stdin.as_mut().expect("server running");
        writeln!(stdin, "accepted").expect("ask the server");
        stdin.flush().expect("ask the server");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("server reply");
        let n: Vec<usize> = line
            .split_whitespace()
            .skip(1)
            .map(|p| p.parse().expect("count"))
            .collect();
        Accepted {
            http: n[0],
            slow: n[1],
            ws: n[2],
        }
    }

    pub(crate) fn url(port: u16) -> String {
        format!("http://127.0.0.1:{port}")
    }

    pub(crate) fn stop(mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
