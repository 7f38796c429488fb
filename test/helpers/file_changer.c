/*
 * Another process that changes a file, and says how long the kernel made it
 * wait (a broken file lease holds it until the lease holder lets go).
 *
 *   file_changer truncate PATH SIZE      truncate(2) by path
 *   file_changer ftruncate PATH SIZE     open(O_RDWR) then ftruncate(2)
 *   file_changer regrow PATH SIZE        open(O_RDWR), ftruncate to 0, then SIZE,
 *                                        then write a marker page at offset 0
 * Prints "waited_ns N" (the time of the first blocking call) on stdout.
 *
 *   file_changer map PATH SIZE           another mapper: mmap MAP_SHARED, close
 *                                        the fd, print "mapped", and hold the
 *                                        mapping until killed
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static unsigned long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static int hold_mapping(const char *path, long size)
{
    void *p;
    int fd;

    fd = open(path, O_RDWR);
    if (fd < 0) {
        perror("open");
        return 1;
    }
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    printf("mapped\n");
    fflush(stdout);
    for (;;) {
        pause();
    }
}

int main(int argc, char **argv)
{
    unsigned long long t0, waited;
    char page[4096];
    long size;
    int fd;

    if (argc != 4) {
        fprintf(stderr, "usage: file_changer truncate|ftruncate|regrow|map PATH SIZE\n");
        return 2;
    }
    size = atol(argv[3]);
    if (!strcmp(argv[1], "map")) {
        return hold_mapping(argv[2], size);
    }
    t0   = now_ns();
    if (!strcmp(argv[1], "truncate")) {
        if (truncate(argv[2], size) < 0) {
            perror("truncate");
            return 1;
        }
        waited = now_ns() - t0;
    } else {
        fd = open(argv[2], O_RDWR);
        waited = now_ns() - t0;
        if (fd < 0) {
            perror("open");
            return 1;
        }
        if (!strcmp(argv[1], "regrow")) {
            memset(page, 0x5a, sizeof(page));
            if ((ftruncate(fd, 0) < 0) || (ftruncate(fd, size) < 0) ||
                (pwrite(fd, page, sizeof(page), 0) != sizeof(page))) {
                perror("regrow");
                return 1;
            }
        } else if (ftruncate(fd, size) < 0) {
            perror("ftruncate");
            return 1;
        }
        close(fd);
    }
    printf("waited_ns %llu\n", waited);
    return 0;
}
