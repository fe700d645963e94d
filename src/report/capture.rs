//! Gets the drift check's output: runs the playbook command, copying its output to stderr as it
//! comes so the CI log shows it, or reads output captured earlier from a file or stdin.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;

/// The text to parse (stdout, then stderr) and, for a command, how it ended.
#[derive(Debug)]
pub struct Captured {
    pub text: String,
    pub status: Option<ExitStatus>,
}

/// Runs `command` (program and arguments) to completion.
pub fn run_command(command: &[String]) -> io::Result<Captured> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| io::Error::new(error.kind(), format!("cannot run {program}: {error}")))?;
    let stdout = child.stdout.take().map(tee_to_stderr);
    let stderr = child.stderr.take().map(tee_to_stderr);
    let status = child.wait()?;
    let mut text = stdout.map(join).unwrap_or_default();
    let errors = stderr.map(join).unwrap_or_default();
    if !errors.is_empty() {
        text.push('\n');
        text.push_str(&errors);
    }
    Ok(Captured {
        text,
        status: Some(status),
    })
}

/// Reads captured output from `path`, or from stdin when `path` is `-`.
pub fn read_input(path: &Path) -> io::Result<Captured> {
    let mut bytes = Vec::new();
    if path == Path::new("-") {
        io::stdin().lock().read_to_end(&mut bytes)?;
    } else {
        bytes = std::fs::read(path).map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("cannot read {}: {error}", path.display()),
            )
        })?;
    }
    Ok(Captured {
        text: String::from_utf8_lossy(&bytes).into_owned(),
        status: None,
    })
}

fn tee_to_stderr(stream: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut collected = String::new();
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
            // A closed stderr must not stop the capture the report depends on.
            let _ = io::stderr().lock().write_all(&line);
            collected.push_str(&String::from_utf8_lossy(&line));
            line.clear();
        }
        collected
    })
}

fn join(handle: thread::JoinHandle<String>) -> String {
    handle.join().unwrap_or_default()
}
