"""Every language of runtimes/catalog through a real server: its sample, a program that
exceeds the memory limit and one that starts more threads or processes than the limit allows.
Each must get the verdicts C gets: memory_limit_exceeded for the first; for the second a
failure of the program itself (exit_status RE), not of the runtime at start-up, while the same
program with two threads succeeds.

With ENVICUTOR_ALL_LANGUAGES=1 (set where scripts/install-deps --languages all ran) every entry
must be installed and GET /runtimes must list at least 20 languages; otherwise the entries
whose toolchain is absent are listed once, in test_installed_languages, and the rest run."""
import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import Server, catalog_entries

CATALOG_PATH = "/usr/local/bin:/usr/bin:/bin"
ALL = os.environ.get("ENVICUTOR_ALL_LANGUAGES") == "1"
MEMORY_KB = 256000  # the memory programs reach for 4 GB
PROCESS_LIMIT = 64  # the server's default run max_number_of_processes

# ---- per language: (memory program, threads-or-processes program reading N) -------------
# The second starts N threads (or processes) that block until it has started them all, so all
# N exist at once by construction, prints "started N", then lets them end.

C_THREADS = r"""#include <pthread.h>
#include <stdio.h>
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static void *wait_for_main(void *a) { pthread_mutex_lock(&m); pthread_mutex_unlock(&m); return a; }
int main(void)
{
    int n;
    pthread_t t[1000];
    if (scanf("%d", &n) != 1) return 2;
    pthread_mutex_lock(&m);
    for (int i = 0; i < n; i++)
        if (pthread_create(&t[i], NULL, wait_for_main, NULL) != 0) { fprintf(stderr, "thread %d failed\n", i); return 1; }
    printf("started %d\n", n);
    fflush(stdout);
    pthread_mutex_unlock(&m);
    for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
    return 0;
}"""
C_MEMORY = r"""#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(void)
{
    for (int i = 0; i < 64; i++) { char *p = malloc(64 << 20); if (!p) return 3; memset(p, 1, 64 << 20); }
    puts("survived");
    return 0;
}"""
CPP_THREADS = r"""#include <cstdlib>
#include <iostream>
#include <mutex>
#include <thread>
#include <vector>
int main()
{
    int n;
    std::cin >> n;
    std::mutex m;
    std::vector<std::thread> ts;
    m.lock();
    for (int i = 0; i < n; i++) {
        try { ts.emplace_back([&m] { std::lock_guard<std::mutex> g(m); }); }
        catch (const std::system_error &e) { std::cerr << "thread " << i << " failed: " << e.what() << std::endl; std::_Exit(1); }
    }
    std::cout << "started " << n << std::endl;
    m.unlock();
    for (auto &t : ts) t.join();
}"""
CPP_MEMORY = r"""#include <iostream>
#include <vector>
int main()
{
    std::vector<std::vector<char>> v;
    for (int i = 0; i < 64; i++) v.emplace_back(64 << 20, 1);
    std::cout << "survived\n";
}"""
PY_THREADS = """import os, sys, threading
n = int(sys.stdin.read())
lock = threading.Lock()
lock.acquire()
def wait_for_main():
    with lock:
        pass
ts = []
for i in range(n):
    t = threading.Thread(target=wait_for_main)
    try:
        t.start()
    except RuntimeError as e:
        print("thread", i, "failed:", e, file=sys.stderr, flush=True)
        os._exit(1)
    ts.append(t)
print("started", n, flush=True)
lock.release()
for t in ts:
    t.join()"""
PY_MEMORY = """chunks = []
for i in range(64):
    chunks.append(bytearray(b"x" * (64 << 20)))
print("survived")"""
JAVA_THREADS = """import java.util.*;
import java.util.concurrent.CountDownLatch;
public class Main {
    public static void main(String[] args) throws Exception {
        int n = new Scanner(System.in).nextInt();
        CountDownLatch go = new CountDownLatch(1);
        List<Thread> ts = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            Thread t = new Thread(() -> { try { go.await(); } catch (InterruptedException e) {} });
            try { t.start(); } catch (OutOfMemoryError e) { System.err.println("thread " + i + " failed: " + e); System.exit(1); }
            ts.add(t);
        }
        System.out.println("started " + n);
        go.countDown();
        for (Thread t : ts) t.join();
    }
}"""
JAVA_MEMORY = """import java.util.*;
public class Main {
    public static void main(String[] args) {
        List<byte[]> l = new ArrayList<>();
        for (int i = 0; i < 64; i++) { byte[] b = new byte[64 << 20]; Arrays.fill(b, (byte) 1); l.add(b); }
        System.out.println("survived " + l.size());
    }
}"""
KOTLIN_THREADS = """import java.util.concurrent.CountDownLatch
fun main() {
    val n = readLine()!!.trim().toInt()
    val go = CountDownLatch(1)
    val ts = (1..n).map { i ->
        Thread { go.await() }.also {
            try { it.start() } catch (e: OutOfMemoryError) { System.err.println("thread $i failed: $e"); System.exit(1) }
        }
    }
    println("started $n")
    go.countDown()
    ts.forEach { it.join() }
}"""
KOTLIN_MEMORY = """fun main() {
    val l = ArrayList<ByteArray>()
    for (i in 0 until 64) l.add(ByteArray(64 shl 20) { 1 })
    println("survived ${l.size}")
}"""
SCALA_THREADS = """import java.util.concurrent.CountDownLatch
object Main {
  def main(args: Array[String]): Unit = {
    val n = scala.io.StdIn.readLine().trim.toInt
    val go = new CountDownLatch(1)
    val ts = (1 to n).map { _ => val t = new Thread(new Runnable { def run(): Unit = go.await() })
      try t.start() catch { case e: OutOfMemoryError => System.err.println("failed: " + e); System.exit(1) }
      t }
    println("started " + n)
    go.countDown()
    ts.foreach(_.join())
  }
}"""
SCALA_MEMORY = """object Main {
  def main(args: Array[String]): Unit = {
    val l = scala.collection.mutable.ArrayBuffer[Array[Byte]]()
    for (i <- 0 until 64) { val b = new Array[Byte](64 << 20); java.util.Arrays.fill(b, 1.toByte); l += b }
    println("survived " + l.size)
  }
}"""
GO_THREADS = """package main

import (
	"fmt"
	"runtime"
	"sync"
)

// A goroutine that locked its OS thread keeps that thread to itself while it waits.
func main() {
	var n int
	fmt.Scan(&n)
	var started, done sync.WaitGroup
	release := make(chan struct{})
	for i := 0; i < n; i++ {
		started.Add(1)
		done.Add(1)
		go func() {
			runtime.LockOSThread()
			started.Done()
			<-release
			done.Done()
		}()
	}
	started.Wait()
	fmt.Println("started", n)
	close(release)
	done.Wait()
}"""
GO_MEMORY = """package main

import "fmt"

func main() {
	var l [][]byte
	for i := 0; i < 64; i++ {
		b := make([]byte, 64<<20)
		for j := range b {
			b[j] = 1
		}
		l = append(l, b)
	}
	fmt.Println("survived", len(l))
}"""
RUST_THREADS = """use std::io::Read;
use std::sync::{Arc, Mutex};
fn main() {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s).unwrap();
    let n: usize = s.trim().parse().unwrap();
    let m = Arc::new(Mutex::new(()));
    let g = m.lock().unwrap();
    let mut hs = Vec::new();
    for i in 0..n {
        let m2 = m.clone();
        match std::thread::Builder::new().spawn(move || { let _x = m2.lock(); }) {
            Ok(h) => hs.push(h),
            Err(e) => { eprintln!("thread {} failed: {}", i, e); std::process::exit(1); }
        }
    }
    println!("started {}", n);
    drop(g);
    for h in hs { h.join().unwrap(); }
}"""
RUST_MEMORY = """fn main() {
    let mut l = Vec::new();
    for _ in 0..64 { l.push(vec![1u8; 64 << 20]); }
    println!("survived {}", l.len());
}"""
NODE_PROCESSES = """const { spawn } = require('child_process');
const n = Number(require('fs').readFileSync(0, 'utf8'));
const kids = [];
for (let i = 0; i < n; i++) {
  const k = spawn('cat', [], { stdio: ['pipe', 'ignore', 'ignore'] });
  k.on('error', (e) => { console.error('process ' + i + ' failed: ' + e.message); process.exit(1); });
  kids.push(k);
}
setImmediate(() => {
  console.log('started ' + n);
  for (const k of kids) k.stdin.end();
});"""
NODE_MEMORY = """const l = [];
for (let i = 0; i < 64; i++) l.push(Buffer.alloc(64 << 20, 1));
console.log('survived ' + l.length);"""
TS_DECLARE = ("declare function require(name: string): any;\ndeclare const process: any;\n"
              "declare const Buffer: any;\ndeclare function setImmediate(f: () => void): void;\n")
RUBY_THREADS = """n = STDIN.read.to_i
m = Mutex.new
m.lock
ts = (1..n).map { Thread.new { m.synchronize {} } }
puts "started #{n}"
STDOUT.flush
m.unlock
ts.each(&:join)"""
RUBY_MEMORY = """l = []
64.times { l << ("x" * (64 << 20)) }
puts "survived #{l.size}\""""
PHP_PROCESSES = """<?php
$n = (int) stream_get_contents(STDIN);
[$r, $w] = stream_socket_pair(STREAM_PF_UNIX, STREAM_SOCK_STREAM, STREAM_IPPROTO_IP);
for ($i = 0; $i < $n; $i++) {
    $pid = pcntl_fork();
    if ($pid < 0) { fwrite(STDERR, "process $i failed\\n"); exit(1); }
    if ($pid == 0) { fclose($w); fread($r, 1); exit(0); }
}
echo "started $n\\n";
fclose($w);
while (pcntl_wait($status) > 0) {}"""
PHP_MEMORY = """<?php
$l = [];
for ($i = 0; $i < 64; $i++) $l[] = str_repeat('x', 64 << 20);
echo "survived ", count($l), "\\n";"""
PERL_PROCESSES = """my $n = <STDIN>;
pipe(my $r, my $w) or die;
for my $i (1 .. $n) {
    my $pid = fork();
    die "process $i failed: $!\\n" unless defined $pid;
    if ($pid == 0) { close $w; my $b; sysread($r, $b, 1); exit 0; }
}
print "started ", $n + 0, "\\n";
close $w;
1 while wait() > 0;"""
PERL_MEMORY = """my @l;
push @l, "x" x (64 << 20) for 1 .. 64;
print "survived ", scalar(@l), "\\n";"""
LUA_PROCESSES = """local n = io.read('n')
local kids = {}
for i = 1, n do
  local p, err = io.popen('exec cat >/dev/null', 'w')
  if not p then io.stderr:write('process ' .. i .. ' failed: ' .. err .. '\\n') os.exit(1) end
  kids[i] = p
end
print('started ' .. n)
io.stdout:flush()
for _, p in ipairs(kids) do p:close() end"""
LUA_MEMORY = """local l = {}
for i = 1, 64 do l[i] = string.rep(string.char(64 + i % 26), 64 << 20) end
print('survived ' .. #l)"""
OCAML_PROCESSES = """let () =
  let n = Scanf.scanf " %d" (fun x -> x) in
  let r, w = Unix.pipe () in
  for _ = 1 to n do
    match Unix.fork () with
    | 0 -> Unix.close w; ignore (Unix.read r (Bytes.create 1) 0 1); exit 0
    | _ -> ()
  done;
  Printf.printf "started %d\\n%!" n;
  Unix.close w;
  (try while true do ignore (Unix.wait ()) done with Unix.Unix_error _ -> ())"""
OCAML_MEMORY = """let () =
  let l = List.init 64 (fun _ -> Bytes.make (64 lsl 20) 'x') in
  Printf.printf "survived %d\\n" (List.length l)"""
CSHARP_THREADS = """using System;
using System.Collections.Generic;
using System.Threading;
class Program
{
    static void Main()
    {
        int n = int.Parse(Console.In.ReadToEnd().Trim());
        var go = new ManualResetEvent(false);
        var ts = new List<Thread>();
        for (int i = 0; i < n; i++) { var t = new Thread(() => go.WaitOne()); t.Start(); ts.Add(t); }
        Console.WriteLine("started " + n);
        go.Set();
        foreach (var t in ts) t.Join();
    }
}"""
CSHARP_MEMORY = """using System;
using System.Collections.Generic;
class Program
{
    static void Main()
    {
        var l = new List<byte[]>();
        for (int i = 0; i < 64; i++) { var b = new byte[64 << 20]; for (int j = 0; j < b.Length; j += 4096) b[j] = 1; l.Add(b); }
        Console.WriteLine("survived " + l.Count);
    }
}"""
PASCAL_PROCESSES = """program Main;
uses BaseUnix;
var
  n, i: LongInt;
  fds: TFilDes;
  pid: TPid;
  b: Char;
begin
  ReadLn(n);
  if FpPipe(fds) <> 0 then Halt(2);
  for i := 1 to n do
  begin
    pid := FpFork;
    if pid < 0 then begin WriteLn(StdErr, 'process ', i, ' failed'); Halt(1); end;
    if pid = 0 then begin FpClose(fds[1]); FpRead(fds[0], b, 1); Halt(0); end;
  end;
  WriteLn('started ', n);
  Flush(Output);
  FpClose(fds[1]);
  while FpWait(i) > 0 do;
end."""
PASCAL_MEMORY = """program Main;
var
  i: LongInt;
  p: Pointer;
begin
  for i := 1 to 64 do
  begin
    GetMem(p, 64 shl 20);
    FillChar(p^, 64 shl 20, 1);
  end;
  WriteLn('survived');
end."""
FORTRAN_PROCESSES = """program main
  implicit none
  integer :: n, i, stat
  read (*, *) n
  do i = 1, n
    call execute_command_line("exec sleep 600", wait=.false., cmdstat=stat)
    if (stat /= 0) then
      write (0, *) "process", i, "failed"
      error stop 1
    end if
  end do
  print '(A,I0)', "started ", n
end program main"""
FORTRAN_MEMORY = """program main
  implicit none
  integer :: i
  type t
    integer(1), allocatable :: b(:)
  end type t
  type(t) :: l(64)
  do i = 1, 64
    allocate (l(i)%b(64 * 1024 * 1024))
    l(i)%b = 1
  end do
  print '(A)', "survived"
end program main"""
D_THREADS = """import core.sys.posix.unistd : _exit;
import core.sync.mutex;
import core.thread;
import std.conv;
import std.stdio;
import std.string;

void main()
{
    auto n = readln().strip().to!int;
    auto m = new Mutex;
    m.lock();
    Thread[] ts;
    foreach (i; 0 .. n)
    {
        try
            ts ~= new Thread({ m.lock(); m.unlock(); }).start();
        catch (ThreadError e)
        {
            stderr.writeln("thread ", i, " failed: ", e.msg);
            _exit(1);
        }
    }
    writeln("started ", n);
    stdout.flush();
    m.unlock();
    foreach (t; ts)
        t.join();
}"""
D_MEMORY = """import std.stdio;

void main()
{
    ubyte[][] l;
    foreach (i; 0 .. 64)
    {
        auto b = new ubyte[](64 << 20);
        b[] = 1;
        l ~= b;
    }
    writeln("survived ", l.length);
}"""
R_PROCESSES = """con <- file("stdin")
n <- as.integer(readLines(con, n = 1))
close(con)
jobs <- lapply(seq_len(n), function(i) parallel::mcparallel(Sys.sleep(600)))
cat("started", n, "\\n")
invisible(lapply(jobs, function(j) tools::pskill(j$pid)))"""
R_MEMORY = """l <- lapply(1:64, function(i) rep(1, 8 * 1024 * 1024))
cat("survived", length(l), "\\n")"""
BASH_PROCESSES = """read -r n
for ((i = 0; i < n; i++)); do
    exec {fd}< <(exec sleep 600) || exit 1
done
echo "started $n\""""
BASH_MEMORY = """s=x
for i in $(seq 1 30); do s=$s$s; done
echo "survived ${#s}\""""
SQLITE_MEMORY = "SELECT length(randomblob(1000000000));"
# The entry has base but not the unix package: fork, pipe and wait through the FFI. Until the
# pipe's end is closed a child does nothing but wait in read(2).
HASKELL_PROCESSES = """import Control.Monad (forM_, replicateM_, when)
import Foreign.C.Types (CInt (..), CLong (..), CSize (..))
import Foreign.Marshal.Array (allocaArray, peekArray)
import Foreign.Ptr (Ptr, nullPtr)
import System.Exit (ExitCode (..), exitWith)
import System.IO (hFlush, hPutStrLn, stderr, stdout)

foreign import ccall unsafe "fork" c_fork :: IO CInt
foreign import ccall unsafe "pipe" c_pipe :: Ptr CInt -> IO CInt
foreign import ccall unsafe "read" c_read :: CInt -> Ptr CInt -> CSize -> IO CLong
foreign import ccall unsafe "close" c_close :: CInt -> IO CInt
foreign import ccall unsafe "wait" c_wait :: Ptr CInt -> IO CInt
foreign import ccall unsafe "_exit" c_exit :: CInt -> IO ()

main :: IO ()
main = do
  n <- readLn :: IO Int
  allocaArray 2 $ \\fds -> do
    ok <- c_pipe fds
    when (ok /= 0) $ exitWith (ExitFailure 2)
    [r, w] <- peekArray 2 fds
    forM_ [1 .. n] $ \\i -> do
      pid <- c_fork
      when (pid < 0) $ do
        hPutStrLn stderr ("process " ++ show i ++ " failed")
        exitWith (ExitFailure 1)
      when (pid == 0) $ do
        _ <- c_close w
        _ <- c_read r fds 1
        c_exit 0
    putStrLn ("started " ++ show n)
    hFlush stdout
    _ <- c_close w
    replicateM_ n (c_wait nullPtr)"""
HASKELL_MEMORY = """import qualified Data.ByteString.Char8 as B

main :: IO ()
main = do
  let l = [B.replicate (64 * 1024 * 1024) (toEnum (65 + i `mod` 26)) | i <- [0 .. 63 :: Int]]
  mapM_ (\\b -> b `seq` return ()) l
  putStrLn ("survived " ++ show (sum (map B.length l)))"""

PROGRAMS = {
    "C": (C_MEMORY, C_THREADS),
    "C++": (CPP_MEMORY, CPP_THREADS),
    "C++ (Clang)": (CPP_MEMORY, CPP_THREADS),
    "Python 3": (PY_MEMORY, PY_THREADS),
    "PyPy 3": (PY_MEMORY, PY_THREADS),
    "Java": (JAVA_MEMORY, JAVA_THREADS),
    "Kotlin": (KOTLIN_MEMORY, KOTLIN_THREADS),
    "Scala": (SCALA_MEMORY, SCALA_THREADS),
    "Go": (GO_MEMORY, GO_THREADS),
    "Rust": (RUST_MEMORY, RUST_THREADS),
    "Node.js": (NODE_MEMORY, NODE_PROCESSES),
    "TypeScript": (TS_DECLARE + NODE_MEMORY,
                   TS_DECLARE + NODE_PROCESSES.replace("const kids = []", "const kids: any[] = []")
                   .replace("(e) =>", "(e: any) =>")),
    "Ruby": (RUBY_MEMORY, RUBY_THREADS),
    "PHP": (PHP_MEMORY, PHP_PROCESSES),
    "Perl": (PERL_MEMORY, PERL_PROCESSES),
    "Lua": (LUA_MEMORY, LUA_PROCESSES),
    "OCaml": (OCAML_MEMORY, OCAML_PROCESSES),
    "C#": (CSHARP_MEMORY, CSHARP_THREADS),
    "Pascal": (PASCAL_MEMORY, PASCAL_PROCESSES),
    "Fortran": (FORTRAN_MEMORY, FORTRAN_PROCESSES),
    "D": (D_MEMORY, D_THREADS),
    "R": (R_MEMORY, R_PROCESSES),
    "Haskell": (HASKELL_MEMORY, HASKELL_PROCESSES),
    "Bash": (BASH_MEMORY, BASH_PROCESSES),
    # SQL has neither threads nor processes: only its memory is checked.
    "SQLite": (SQLITE_MEMORY, None),
}

ENTRIES = catalog_entries()


def installable(e):
    return all(shutil.which(c, path=CATALOG_PATH) for c in e["requires"])


@pytest.fixture(scope="module")
def lang_server():
    # R needs 256 descriptors (runtimes/catalog/r.json); the server must allow its entry.
    s = Server(MAX_CONCURRENT_SUBMISSIONS=2, RUN_MAX_OPEN_FILES=256).start()
    yield s
    assert s.stop() == 0, s.log_text()


def test_every_entry_has_its_programs():
    assert {e["name"] for e in ENTRIES} == set(PROGRAMS)


def test_installed_languages(lang_server):
    names = lang_server.runtimes()
    absent = [e["name"] for e in ENTRIES if not installable(e)]
    if ALL:
        assert not absent, f"ENVICUTOR_ALL_LANGUAGES=1 but no toolchain for {absent}"
        assert len(names) >= 20, names
    else:
        print(f"not installed here (scripts/install-deps --languages all): {absent}")
    for e in ENTRIES:
        if installable(e):
            assert e["name"] in names, \
                f"{e['name']}: its toolchain is here but it was not installed: {lang_server.log_text()}"


def run_all(server, jobs):
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda j: server.execute(**j), jobs))


def entries_here():
    return [e for e in ENTRIES if ALL or installable(e)]


def test_samples(lang_server):
    ids = lang_server.runtimes()
    es = entries_here()
    rs = run_all(lang_server, [dict(runtime_id=ids[e["name"]], source=e["sample"]["source_code"],
                                    input=e["sample"]["input"]) for e in es])
    bad = {}
    for e, r in zip(es, rs):
        j = r.json()
        if r.status_code != 200 or j["run"] is None or j["run"]["exit_status"] is not None or \
                j["run"]["stdout"] != e["sample"]["expected_output"]:
            bad[e["name"]] = j
    assert not bad, bad


def test_memory_limit(lang_server):
    ids = lang_server.runtimes()
    es = entries_here()
    rs = run_all(lang_server, [dict(runtime_id=ids[e["name"]], source=PROGRAMS[e["name"]][0],
                                    run_limits={"memory": MEMORY_KB}) for e in es])
    bad = {}
    for e, r in zip(es, rs):
        j = r.json()
        if r.status_code != 200 or j["compile"] and j["compile"]["exit_status"] is not None or \
                not j["run"]["memory_limit_exceeded"] or "survived" in j["run"]["stdout"]:
            bad[e["name"]] = j
    assert not bad, bad


def test_process_limit(lang_server):
    ids = lang_server.runtimes()
    es = [e for e in entries_here() if PROGRAMS[e["name"]][1]]
    jobs = []
    for e in es:
        for n in (2, 3 * PROCESS_LIMIT):
            jobs.append(dict(runtime_id=ids[e["name"]], source=PROGRAMS[e["name"]][1], input=f"{n}\n"))
    rs = run_all(lang_server, jobs)
    bad = {}
    for i, e in enumerate(es):
        few, many = rs[2 * i].json(), rs[2 * i + 1].json()
        if few["run"] is None or many["run"] is None:
            bad[e["name"]] = few if few["run"] is None else many
            continue
        # two threads: the program works; three times the limit: it fails, by itself and
        # before its wall time is up
        if few["run"]["exit_status"] is not None or few["run"]["stdout"].split() != ["started", "2"]:
            bad[e["name"] + " (2)"] = few
        if many["run"]["exit_status"] != "RE" or "started" in many["run"]["stdout"]:
            bad[e["name"] + f" ({3 * PROCESS_LIMIT})"] = many["run"]
    assert not bad, "\n".join(f"{k}: {str(v)[:300]}" for k, v in bad.items())
