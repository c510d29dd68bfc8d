/* Test helper: a thread opens a TCP listener on ADDR:PORT, prints
 * "PID TID FD INODE", then sleeps; meanwhile the main thread calls
 * pthread_exit(), leaving a zombie leader whose /proc/PID/fd is empty.
 * Usage: zombie_leader IPV4ADDR PORT   (exits by itself after 60 s) */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static char **args;

static void *worker(void *unused)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(atoi(args[2])) };
	struct stat st;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	(void)unused;
	if (fd < 0 || inet_pton(AF_INET, args[1], &sin.sin_addr) != 1 ||
	    bind(fd, (struct sockaddr *)&sin, sizeof(sin)) || listen(fd, 8) || fstat(fd, &st)) {
		perror("zombie_leader");
		exit(1);
	}
	sleep(1); /* let the main thread go first */
	printf("%d %ld %d %lu\n", getpid(), (long)syscall(SYS_gettid), fd, (unsigned long)st.st_ino);
	fflush(stdout);
	sleep(60);
	exit(0);
}

int main(int argc, char **argv)
{
	pthread_t thread;

	if (argc != 3)
		return 2;
	args = argv;
	if (pthread_create(&thread, NULL, worker, NULL))
		return 1;
	pthread_exit(NULL);
}
