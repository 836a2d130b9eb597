/* Test harness only, never shipped: Wine 8 (Debian 12) has no ProcessPrng in bcryptprimitives.dll,
 * which Rust's standard library imports on Windows (Windows 10 and later have it). The Wine tests
 * (tests/windows.rs) build this as bcryptprimitives.dll beside the pxs.exe under test. */
#include <windows.h>
#include <ntsecapi.h> /* RtlGenRandom (advapi32's SystemFunction036) */

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG n = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!RtlGenRandom(data, n))
            return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
