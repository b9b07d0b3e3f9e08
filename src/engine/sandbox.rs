//! Running code on input from model files (a chat template) where it cannot take the whole
//! machine's memory: on Linux in a forked child process whose address space may grow by a
//! set budget only, and which is stopped after a time limit. Elsewhere the code runs in
//! process, bounded only by what it bounds itself (a template's fuel and output limit).

/// Why a sandboxed run gave no answer.
#[derive(Debug, PartialEq)]
pub enum Failure {
    /// The run reported an error of its own.
    Error(String),
    /// The child ran out of its memory budget, its time, or crashed.
    Killed(String),
}

/// Runs `f` with at most `memory` more bytes of address space and `seconds` of time, and
/// returns what it returned.
pub fn run(
    memory: u64,
    seconds: u32,
    f: impl FnOnce() -> Result<String, String>,
) -> Result<String, Failure> {
    #[cfg(target_os = "linux")]
    {
        linux::run(memory, seconds, f)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (memory, seconds);
        f().map_err(Failure::Error)
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::Failure;
    use std::io::Read;
    use std::os::fd::FromRawFd;

    /// The process's address space now, in bytes (/proc/self/statm's first field).
    fn address_space() -> Option<u64> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = statm.split_whitespace().next()?.parse().ok()?;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Some(pages * u64::try_from(page).ok()?)
    }

    /// Writes all of `bytes` to the raw descriptor `fd`.
    fn write_all(fd: i32, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            // SAFETY: the pointer and length describe `bytes`.
            let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
            if n <= 0 {
                return false;
            }
            bytes = &bytes[n as usize..];
        }
        true
    }

    /// The child's side: limits, the run, its answer down the pipe (a tag byte, 0 for a
    /// result and 1 for an error, then the text), and an exit that runs no destructor nor
    /// exit handler of the parent's state.
    fn child(fd: i32, limit: u64, seconds: u32, f: impl FnOnce() -> Result<String, String>) -> ! {
        // SAFETY: plain system calls on this process's own descriptors and limits.
        unsafe {
            // An allocation failure reports itself on stderr before aborting: not to the
            // user's terminal.
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
            if null >= 0 {
                libc::dup2(null, 2);
            }
            let cap = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            libc::setrlimit(libc::RLIMIT_AS, &cap);
            libc::alarm(seconds);
        }
        let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let ok = match answer {
            Ok(Ok(text)) => write_all(fd, &[0]) && write_all(fd, text.as_bytes()),
            Ok(Err(message)) => write_all(fd, &[1]) && write_all(fd, message.as_bytes()),
            Err(_) => false,
        };
        // SAFETY: ends this process at once, as a forked child must.
        unsafe { libc::_exit(if ok { 0 } else { 3 }) }
    }

    pub fn run(
        memory: u64,
        seconds: u32,
        f: impl FnOnce() -> Result<String, String>,
    ) -> Result<String, Failure> {
        let Some(now) = address_space() else {
            return f().map_err(Failure::Error);
        };
        let mut fds = [0i32; 2];
        // SAFETY: `fds` has room for the two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return f().map_err(Failure::Error);
        }
        let [read_fd, write_fd] = fds;
        // SAFETY: the child only runs `f` and system calls, and leaves through `_exit`.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: the child's copy of the read end is not used.
            unsafe { libc::close(read_fd) };
            child(write_fd, now.saturating_add(memory), seconds, f);
        }
        // SAFETY: the parent's copy of the write end is closed, so the read below ends when
        // the child does.
        unsafe { libc::close(write_fd) };
        if pid < 0 {
            // SAFETY: the read end is ours and not used again.
            unsafe { libc::close(read_fd) };
            return f().map_err(Failure::Error);
        }
        // SAFETY: `read_fd` is an open descriptor owned from here on by this File.
        let mut pipe = unsafe { std::fs::File::from_raw_fd(read_fd) };
        let mut answer = vec![];
        let _ = pipe.read_to_end(&mut answer);
        let mut status = 0;
        // SAFETY: `pid` is our child; `status` is a valid out-pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let exited_cleanly = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
        match answer.split_first() {
            Some((&tag, text)) if exited_cleanly => {
                let text = String::from_utf8_lossy(text).into_owned();
                if tag == 0 {
                    Ok(text)
                } else {
                    Err(Failure::Error(text))
                }
            }
            _ => Err(Failure::Killed(if libc::WIFSIGNALED(status) {
                match libc::WTERMSIG(status) {
                    libc::SIGALRM => format!("it ran past its {seconds} s"),
                    libc::SIGABRT | libc::SIGSEGV => format!(
                        "it ran out of its {} MiB of memory (or crashed)",
                        memory >> 20
                    ),
                    s => format!("it was ended by signal {s}"),
                }
            } else {
                "it failed".to_string()
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_errors_and_runaway_memory_come_back() {
        assert_eq!(run(64 << 20, 10, || Ok("ok".into())), Ok("ok".into()));
        assert_eq!(
            run(64 << 20, 10, || Err("bad".into())),
            Err(Failure::Error("bad".into()))
        );
        #[cfg(target_os = "linux")]
        {
            let hog = || {
                let mut v: Vec<Vec<u8>> = vec![];
                loop {
                    v.push(vec![1u8; 16 << 20]);
                }
            };
            let e = run(64 << 20, 10, hog).unwrap_err();
            assert!(
                matches!(&e, Failure::Killed(m) if m.contains("64 MiB")),
                "{e:?}"
            );
            let e = run(64 << 20, 1, || {
                loop {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            })
            .unwrap_err();
            assert!(
                matches!(&e, Failure::Killed(m) if m.contains("1 s")),
                "{e:?}"
            );
        }
    }
}
